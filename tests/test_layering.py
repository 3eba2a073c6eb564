"""``trainables`` is pure PyTorch: no module of it imports Ray, MLflow or ``study`` (checked on the source)."""

import ast
from pathlib import Path

import pytest

TRAINABLES = sorted((Path(__file__).resolve().parents[1] / "trainables").glob("*.py"))


@pytest.mark.parametrize("module", TRAINABLES, ids=lambda p: p.name)
def test_trainables_imports_neither_ray_nor_mlflow_nor_study(module):
    imported = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"ray", "mlflow", "study", "optuna"}, module.name
