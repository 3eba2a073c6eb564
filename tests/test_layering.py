"""Layout checks: ``trainables`` is pure PyTorch (no module of it imports Ray, MLflow or ``study``: checked on the
source), no module imports itself through others, and every module has its test file."""

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


# Modules without a test file of their own yet: they are being merged into one driver module, whose test
# file replaces theirs; remove them from this list when it lands.
PENDING_TEST_FILES: set[str] = set()


def _test_file_names(module: Path) -> set[str]:
    """The test files that count as a module's: ``test_<name>.py`` and, for a module in a subpackage,
    ``test_<subpackage>_<name>.py``. A name two modules share needs the subpackage's spelling, except
    for the top-level one (trainables/figures.py: test_figures.py; study/report/figures.py:
    test_report_figures.py)."""
    parts = module.relative_to(ROOT).with_suffix("").parts
    names = {f"test_{'_'.join(parts[1:])}.py"}
    if len(parts) == 2 or sum(1 for p in _modules_with_tests() if p.stem == module.stem) == 1:
        names.add(f"test_{module.stem}.py")
    return names


def _modules_with_tests() -> list[Path]:
    return [p for package in ("study", "trainables") for p in sorted((ROOT / package).rglob("*.py"))
            if p.stem not in ("__init__", "__main__")]


def test_every_module_has_its_test_file():
    tests = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    missing = [f"{m.relative_to(ROOT)} (expected {' or '.join(sorted(_test_file_names(m)))})" for m in _modules_with_tests()
               if str(m.relative_to(ROOT)) not in PENDING_TEST_FILES and not _test_file_names(m) & tests]
    assert not missing, missing
    landed = sorted(p for p in PENDING_TEST_FILES if not (ROOT / p).exists())
    assert not landed, f"no longer modules: remove them from PENDING_TEST_FILES: {landed}"
