"""The layers of ``src/saln``: imports go downwards only, and no module imports itself back.

Every import counts, function-level ones too: a deferred import still ties the two modules
together, it only hides the cycle until that function runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "saln"
# The foundations: they import nothing else of saln but the errors.
LOW = {"registry", "io", "config", "distributed", "errors", "graphs"}
# Each unit (a top-level module or package of saln) and the units it may import.
MAY_IMPORT: dict[str, set[str]] = {
    **{unit: set() for unit in LOW},
    "io": {"errors"},
    "selection": {"registry", "graphs"},
    "data": {"registry", "io"},
    "models": {"registry", "data"},
    "runs": {"config", "io", "errors"},
    "sampling": {"selection"},
    "features": {"registry", "io", "errors", "distributed", "data", "models"},
    "train": LOW | {"selection", "data", "models", "runs", "sampling", "features"},
    "report": {"config", "io", "runs", "data", "models"},  # reads records, never trains
    "experiments": LOW | {"runs", "train", "report"},
    "loop": LOW | {"selection", "sampling", "train"},  # a method in a user's own loop
    "cli": LOW
    | {"selection", "data", "models", "runs", "features", "train", "report", "experiments"},
    "__main__": {"cli"},
    "__init__": {"registry", "selection", "sampling", "features", "loop"},
}
# The errors a user can act on are the floor under every layer.
for _allowed in MAY_IMPORT.values():
    _allowed.add("errors")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The saln modules ``path`` imports anywhere in it; ``from pkg import mod`` names mod."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "saln"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.split(".")[0] != "saln":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports(f, modules) for f in files}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond


def test_no_module_imports_itself_back() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_belongs_to_a_known_layer() -> None:
    assert {unit(m) for m in import_graph()} == set(MAY_IMPORT)


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_imports_go_downwards_only(module: str) -> None:
    allowed = MAY_IMPORT[unit(module)] | {unit(module)}
    upward = sorted(t for t in import_graph()[module] if unit(t) not in allowed)
    assert not upward, f"{module} imports {upward}, above or beside its layer"


def test_every_name_the_package_exports_loads_from_its_module() -> None:
    """``saln``'s names load on first use: each in ``__all__`` resolves to its module's object,
    and a name it does not export is an AttributeError, as for any module."""
    import importlib

    import saln

    lazy = [name for name in saln.__all__ if name != "__version__"]
    assert sorted(lazy) == sorted(saln._MODULE_OF)
    for name in lazy:
        home = importlib.import_module(saln._MODULE_OF[name])
        assert getattr(saln, name) is getattr(home, name), name
    assert set(saln.__all__) <= set(dir(saln))
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        saln.fit  # noqa: B018
