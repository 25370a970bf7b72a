"""The house of `pplug/`: modules import each other without a circle, folders only downwards, files stay small.

Every import of a `pplug` module counts: top-level, inside functions, under `if TYPE_CHECKING:`, absolute
(`import pplug.x.y`, `from pplug.x.y import z`, `from pplug.x import y`) and relative (`from . import y`,
`from .y import z`, `from ..x import y`). A function-level import only postpones a circle to the first call; it
does not remove it. Each folder's `__init__` docstring says which folders it may import ("May import: ...");
`benchmarks.report.folder_layers` reads those lines, and docs/architecture.md is rendered from them.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from benchmarks.report import folder_layers

PACKAGE = "pplug"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 450
MAX_FLOORS = 12  # the flat layout of pplug 0.1 stood 17 floors high


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.AST, here: str, is_package: bool, modules: set[str]) -> set[str]:
    """The `pplug` modules a module's syntax tree imports. `here` is the module's dotted name; a name imported
    from a package counts as its submodule when there is one, else as the package's `__init__`."""
    package = here if is_package else here.rpartition(".")[0]

    def target(dotted: str, names: list[str]) -> set[str]:
        return {f"{dotted}.{n}" if f"{dotted}.{n}" in modules else dotted for n in names}

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")}
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                found |= target(".".join(base + ([node.module] if node.module else [])), names)
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                found |= target(node.module, names)
    return found


@cache
def import_graph() -> dict[str, frozenset[str]]:
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {}
    for p in paths:
        name = module_name(p)
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        deps = imported_modules(tree, name, p.stem == "__init__", modules)
        graph[name] = frozenset(d for d in deps if d != name and d in modules)
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


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each module's floor: 1 + the highest floor it imports (1 for a module that imports none)."""
    out: dict[str, int] = {}

    def floor(node: str) -> int:
        if node not in out:
            out[node] = 1 + max((floor(d) for d in graph.get(node, ())), default=0)
        return out[node]

    for node in graph:
        floor(node)
    return out


def folder_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE_DIR / parts[1]).is_dir()) else None


def test_the_import_graph_sees_function_level_and_relative_imports():
    modules = {"pplug", "pplug.a", "pplug.b", "pplug.c", "pplug.d", "pplug.d.e", "pplug.d.f"}
    tree = ast.parse(
        "from .. import a\n"
        "from pplug import __version__\n"
        "from . import e\n"
        "def f():\n"
        "    from ..b import x\n"
        "    import pplug.c\n"
        "    from .e import y\n"
    )
    assert imported_modules(tree, "pplug.d.f", False, modules) == {"pplug.a", "pplug", "pplug.d.e", "pplug.b",
                                                                   "pplug.c"}
    assert find_cycle({"pplug.a": {"pplug.b"}, "pplug.b": {"pplug.c"}, "pplug.c": {"pplug.a"}}) == [
        "pplug.a", "pplug.b", "pplug.c", "pplug.a"]
    assert find_cycle({"pplug.a": {"pplug.b"}, "pplug.b": set()}) is None
    assert floors({"a": {"b"}, "b": {"c"}, "c": set()}) == {"a": 3, "b": 2, "c": 1}


def test_pplug_modules_import_each_other_without_a_circle():
    graph = import_graph()
    assert "pplug.modeling.model" in graph and "pplug.cli.main" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_folders_import_only_the_folders_below_them():
    layers = folder_layers(PACKAGE_DIR)
    assert set(layers) == {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()}
    assert find_cycle({k: set(v) for k, v in layers.items()}) is None, "the declared folder graph has a circle"
    wrong = []
    for module, deps in import_graph().items():
        src = folder_of(module)
        for dep in deps:
            dst = folder_of(dep)
            if src and dst and dst != src and dst not in layers[src]:
                wrong.append(f"{module} -> {dep} ({src}/ may import: {', '.join(layers[src]) or 'nothing'})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_tower_is_low_and_every_file_is_small():
    graph = {m: deps for m, deps in import_graph().items() if not m.endswith(".__main__")}  # `python -m` doors
    top = max(floors(graph).values())
    assert top <= MAX_FLOORS, f"{top} import floors"
    long = [f"{p.relative_to(PACKAGE_DIR.parent)}: {n}" for p in sorted(PACKAGE_DIR.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_no_module_only_hands_names_on():
    """A module that defines nothing and only re-exports another (a facade) hides where a name lives."""
    facades = []
    for p in sorted(PACKAGE_DIR.rglob("*.py")):
        if p.stem.startswith("__"):
            continue
        body = ast.parse(p.read_text(encoding="utf-8")).body
        if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign))
                   for n in body):
            facades.append(str(p.relative_to(PACKAGE_DIR.parent)))
    assert not facades, f"modules that define nothing: {facades}"


def test_old_flat_paths_still_import_and_warn():
    import importlib
    import warnings

    from pplug._moved import FOLDER_NAMES, MODULES

    old, new = "pplug.data", MODULES["pplug.data"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert importlib.import_module(old) is importlib.import_module(new)
        from pplug.store import UserStore  # a name of a module that became a folder
    assert UserStore is importlib.import_module("pplug.store.sqlite").UserStore
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(new in m for m in messages) and any("pplug.store.sqlite.UserStore" in m for m in messages)
    for module in (*MODULES.values(), *(m for ms in FOLDER_NAMES.values() for m in ms)):
        importlib.import_module(module)  # every target exists
