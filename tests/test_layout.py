"""The package's shape: the folder tree is the pipeline (DESIGN.md), and no module imports
another that imports it back, lazily or for types only.

Oracle: the import statements themselves, read with `ast` from every module's source.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bpcompile"
ROOT_MODULE_LIMIT = 8
LINE_LIMIT = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> set[str]:
    """The package's modules that `module` imports anywhere in its source: at the top, inside
    functions and under TYPE_CHECKING alike."""
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from . import cache` reads the module cache; `from .api import compile`, api
            base = _resolve(module, path, node) if node.level else (node.module or "")
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph`, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_module_imports_itself_back() -> None:
    """A package's __init__ is left out as an importer only where it imports nothing of its
    own package (each stage's __init__ is a docstring); the root re-exports the API."""
    graph = {module: imports(module) for module in MODULES}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_one_folder_per_stage() -> None:
    """At most eight modules at the root; every stage folder says in its __init__ docstring
    what it takes and gives."""
    root = [p for p in PACKAGE.glob("*.py")]
    assert len(root) <= ROOT_MODULE_LIMIT, sorted(p.name for p in root)
    for folder in ("language", "graph", "differentiate", "passes", "backends",
                   "backends/numpy", "backends/llvm", "runtime", "inspect", "training", "export",
                   "cli"):
        init = PACKAGE / folder / "__init__.py"
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring) > 80, f"{folder}/__init__.py needs a docstring"


def test_files_are_short() -> None:
    long = {module: len(path.read_text().splitlines()) for module, path in MODULES.items()}
    assert not {m: n for m, n in long.items() if n > LINE_LIMIT}
