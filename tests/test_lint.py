"""The code passes the project's ruff rules (pyproject.toml: pyflakes, pycodestyle, import order): the suite that
`.ci/run` runs is also the lint."""

import subprocess
import sys
from pathlib import Path


def test_ruff_finds_nothing():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(root)], capture_output=True,
                          text=True, cwd=root)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
