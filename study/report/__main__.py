"""``python -m study.report``."""

import sys

from study.report.build import main

sys.exit(main())
