"""The shape of the ``fastq`` package: its modules import each other without a cycle.

The graph is built from the source with ``ast``: an edge A -> B for each ``import B`` /
``from B import ...`` that runs when A is imported (module level, including ``try`` / ``if``
blocks, but not ``if TYPE_CHECKING:`` blocks and not function bodies). ``from P import name``
is an edge to ``P.name`` when that is a module, else to ``P``. Imports inside functions are
allowed (they keep start-up cheap), but they must not be what hides a cycle: adding them to the
graph must not close one either.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

PACKAGE = Path(__file__).resolve().parent.parent / "fastq"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], local: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """(import statement, inside a function?) for every import under ``body``."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, local
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _imports(node.body, True)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            continue  # never runs
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from _imports([c for c in children if isinstance(c, ast.stmt)] +
                                        [s for h in children if isinstance(h, ast.ExceptHandler) for s in h.body],
                                        local)


def _targets(node: ast.stmt, current: str, is_package: bool, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in known:
                yield alias.name
        return
    assert isinstance(node, ast.ImportFrom)
    base: Optional[str] = node.module
    if node.level:
        parts = current.split(".") if is_package else current.split(".")[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    if base is None or base not in known:
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in known else base


def import_graph(with_local: bool) -> tuple[dict[str, set[str]], int]:
    """{module: modules it imports} inside fastq, and how many function-local fastq imports there are."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    local_count = 0
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, local in _imports(tree.body, False):
            targets = set(_targets(node, name, path.name == "__init__.py", set(known)))
            if local and targets:
                local_count += 1
            if local and not with_local:
                continue
            graph[name] |= targets - {name}
    return graph, local_count


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_module_level_imports_only():
    graph, _ = import_graph(with_local=False)
    assert "fastq.scheduler.scheduler" in graph["fastq.scheduler.periodic"]
    assert "fastq.scheduler.cron" in graph["fastq.scheduler.scheduler"]
    assert "fastq.scheduler.app" not in graph["fastq.server.supervisor"]  # imported inside a function


def test_no_import_cycle_at_module_level():
    graph, _ = import_graph(with_local=False)
    assert find_cycle(graph) is None


def test_no_cycle_hidden_by_a_function_local_import():
    """Imports inside functions keep start-up cheap; they must not be what breaks a cycle."""
    graph, local_imports = import_graph(with_local=True)
    assert local_imports > 0  # the walk does see them
    assert find_cycle(graph) is None
