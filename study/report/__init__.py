"""MLflow → the paper's tables and figures; ``python -m study.report`` runs ``build.main``."""
