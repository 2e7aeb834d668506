"""The import graph of medcore: no circle, and the stages never import Airflow.

Every import counts, those inside functions too: a circle hidden in a function is still a circle a reader
has to untangle, and it breaks the day someone hoists the import.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

MEDCORE = Path(__file__).resolve().parent.parent / "medcore"
# The one module allowed to import Airflow (the adapter), and the command line that only starts things.
AIRFLOW_ALLOWED = {"medcore.airflow_adapter"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(MEDCORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The medcore modules `path` imports, anywhere in it (`from medcore.x import y` counts y if y is a module)."""
    tree = ast.parse(path.read_text())
    # Imports under `if TYPE_CHECKING:` never run: they name a type, they do not load a module.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the medcore modules it imports."""
    paths = {_module_name(p): p for p in MEDCORE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for target in _imports(path, set(paths)):
            # A package's __init__ is imported on the way to any of its modules; it holds no code here.
            if target != name and not (paths[target].name == "__init__.py" and name.startswith(target + ".")):
                graph[name].add(target)
    return graph


def test_medcore_has_no_import_circle():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as circle:
        raise AssertionError(f"import circle: {' -> '.join(reversed(circle.args[1]))}") from None


def test_only_the_adapter_imports_airflow():
    offenders = []
    for path in MEDCORE.rglob("*.py"):
        name = _module_name(path)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(m == "airflow" or m.startswith("airflow.") for m in mods) and name not in AIRFLOW_ALLOWED:
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, offenders


def test_the_graph_sees_imports_inside_functions():
    """The checker itself: an import inside a function is an edge (else the circle test could pass vacuously)."""
    graph = import_graph()
    assert sum(map(len, graph.values())) > 50
    assert "medcore.nights.registry" in graph["medcore.nights.nightly"]  # imported inside a function
    graph["medcore.nights.registry"].add("medcore.nights.nightly")
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError:
        pass
    else:
        raise AssertionError("a circle added by hand was not found")
