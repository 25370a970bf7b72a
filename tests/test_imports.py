"""The modules of `pplug/` import each other without a circle.

Every import of a `pplug` module counts: top-level, inside functions, under `if TYPE_CHECKING:`, absolute
(`import pplug.x`, `from pplug.x import y`, `from pplug import x`) and relative (`from . import x`,
`from .x import y`). A function-level import only postpones a circle to the first call; it does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "pplug"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def imported_modules(tree: ast.AST, modules: set[str]) -> set[str]:
    """The `pplug` modules a module's syntax tree imports (`pplug` itself stands for `pplug/__init__.py`)."""

    def target(dotted: str, names: list[str]) -> set[str]:
        # `from pplug import x`: a submodule when x is one, else a name of `pplug/__init__.py`.
        if dotted == PACKAGE:
            return {f"{PACKAGE}.{n}" if f"{PACKAGE}.{n}" in modules else PACKAGE for n in names}
        return {dotted}

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")}
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:  # the package is flat: `.` is pplug itself
                found |= target(PACKAGE + (f".{node.module}" if node.module else ""), names)
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                found |= target(node.module, names)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE_DIR.glob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {}
    for p in paths:
        name = module_name(p)
        deps = imported_modules(ast.parse(p.read_text(encoding="utf-8"), filename=str(p)), modules)
        graph[name] = {d for d in deps if d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_sees_function_level_and_relative_imports():
    modules = {"pplug", "pplug.a", "pplug.b", "pplug.c"}
    tree = ast.parse(
        "from . import a\n"
        "from pplug import __version__\n"
        "def f():\n"
        "    from .b import x\n"
        "    import pplug.c\n"
    )
    assert imported_modules(tree, modules) == {"pplug", "pplug.a", "pplug.b", "pplug.c"}
    assert find_cycle({"pplug.a": {"pplug.b"}, "pplug.b": {"pplug.c"}, "pplug.c": {"pplug.a"}}) == [
        "pplug.a", "pplug.b", "pplug.c", "pplug.a"]
    assert find_cycle({"pplug.a": {"pplug.b"}, "pplug.b": set()}) is None


def test_pplug_modules_import_each_other_without_a_circle():
    graph = import_graph()
    assert "pplug.model" in graph and "pplug.cli" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)
