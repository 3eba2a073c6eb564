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


ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every import of our packages by our modules, lazy ones inside functions included."""
    modules = {_module_name(p): p for package in ("study", "trainables") for p in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_no_module_of_ours_imports_itself_through_others():
    graph, cycles = _import_graph(), []

    def visit(node: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt], on_path | {nxt}, done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], {start}, done)
    assert not cycles, [" -> ".join(c) for c in cycles]
