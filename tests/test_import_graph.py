"""No import cycles in murmura, at import time or through imports deferred into functions.

The graph is built from the source (AST), not by importing: an edge ``a -> b`` means that
``a`` imports ``b`` at module level (the import-time graph) or anywhere outside
``if TYPE_CHECKING:`` blocks, which never run (the deferred graph: an import moved into a
function hides a cycle from Python, not from the layering). Importing ``murmura.x.y`` also
runs the package ``murmura.x`` (its ``__init__``) unless the importer lives inside it.
Run this file as a script to print the cycles (strongly connected components) of both.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(root: Path = SRC) -> dict[str, Path]:
    """Every module under ``root/murmura``, by dotted name."""
    out: dict[str, Path] = {}
    for path in (root / "murmura").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], deferred: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements in ``body``; with ``deferred``, those inside functions too.

    Blocks under ``if TYPE_CHECKING:`` never run, so they are skipped either way.
    """
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, deferred)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if deferred:
                yield from _imports(node.body, deferred)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _imports([child], deferred)
                elif isinstance(child, ast.excepthandler):
                    yield from _imports(child.body, deferred)


def _imported(name: str, node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """The murmura modules a statement in module ``name`` names directly."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    base = node.module or ""
    if node.level:
        package = name if name in _packages(modules) else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    out = {base} if base in modules else set()
    out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
    return out


def _packages(modules: set[str]) -> set[str]:
    return {m.rpartition(".")[0] for m in modules if "." in m}


def import_graph(root: Path = SRC, *, deferred: bool = False) -> dict[str, set[str]]:
    """``module -> murmura modules it imports``: at import time, or also inside functions."""
    files = module_files(root)
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        own = {name.rsplit(".", k)[0] for k in range(name.count(".") + 1)}
        for node in _imports(tree.body, deferred):
            for target in _imported(name, node, modules):
                parts = target.split(".")
                chain = {".".join(parts[: i + 1]) for i in range(len(parts))}
                graph[name] |= {m for m in chain if m in modules and m not in own}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def test_the_graph_sees_real_imports() -> None:
    graph = import_graph()
    assert "murmura.errors" in graph["murmura.registry"]
    assert "murmura.config.base" in graph["murmura.config.run"]
    # Importing a submodule from outside its package runs the package's __init__ too.
    assert "murmura.config" in graph["murmura.sim.builder"]
    # cli imports the run session inside `run`; TYPE_CHECKING imports are never edges
    assert "murmura.sim.session" not in graph["murmura.cli"]
    assert "murmura.sim.session" in import_graph(deferred=True)["murmura.cli"]
    assert "murmura.types" not in import_graph(deferred=True)["murmura.cli"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_at_import_time() -> None:
    found = cycles(import_graph())
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_cycle_through_deferred_imports() -> None:
    found = cycles(import_graph(deferred=True))
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def _imports_of(graph: dict[str, set[str]], below: str, above: str) -> set[tuple[str, str]]:
    """The edges from a module of package ``below`` into package ``above``."""
    inside = lambda m, p: m == p or m.startswith(p + ".")  # noqa: E731
    return {(a, b) for a, bs in graph.items() if inside(a, below) for b in bs if inside(b, above)}


# node/edge.py's edge-report helpers move from sim/hierarchical to engine/ on another branch
def test_the_deployed_roles_never_import_the_simulation() -> None:
    """Deployment and simulation build from one composition root (``murmura.compose``)."""
    graph = import_graph(deferred=True)
    assert _imports_of(graph, "murmura.node", "murmura.sim") == set()
    assert "murmura.compose.kinds" in graph["murmura.node.deploy"]


def test_the_composition_root_imports_neither_runtime() -> None:
    graph = import_graph(deferred=True)
    assert _imports_of(graph, "murmura.compose", "murmura.sim") == set()
    assert _imports_of(graph, "murmura.compose", "murmura.node") == set()
    assert "murmura.compose.server" in graph["murmura.sim.builder"]


if __name__ == "__main__":
    for deferred in (False, True):
        print("with imports inside functions:" if deferred else "module-level imports:")
        found = cycles(import_graph(deferred=deferred))
        for component in found:
            print(f"  cycle of {len(component)}: " + ", ".join(component))
        print(f"  {len(found)} cycle(s)")
