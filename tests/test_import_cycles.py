"""No import cycle among the project's modules, counting the imports inside functions.

An import hidden in a function body still makes two modules depend on each other; it only moves
the failure from import time to call time. This test walks every module's syntax tree (imports at
any depth; those under ``if TYPE_CHECKING:`` are not run and do not count), resolves them to the
project's modules and reports each strongly connected group of modules with one concrete cycle,
file and line of every edge. Needs nothing beyond the standard library (grimp, where installed,
must see the same imports: :func:`test_the_walk_sees_what_grimp_sees`).
"""
from __future__ import annotations

import ast
import importlib.util
from collections import deque
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the project's packages (runtime/: where present)
PACKAGES = tuple(p for p in ("qwt_core", "runtime", "classification", "detection", "benchmarks")
                 if (REPO / p / "__init__.py").exists())
#: package -> the cycle, for cycles known in packages this change does not own (xfail, strict)
KNOWN_CYCLES: dict[str, str] = {}

Edges = dict[str, dict[str, int]]  # importer -> {imported: line of the first such import}


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` under ``root``."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            if any(not (d / "__init__.py").exists() for d in path.parents if d.is_relative_to(root / pkg)):
                continue  # not in a package (e.g. mmdet config folders): never imported as a module
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and _type_checking(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _nearest(name: str, known: dict[str, Path]) -> str | None:
    """``name`` or its nearest enclosing project module (``a.b.func`` -> ``a.b``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path, packages: tuple[str, ...]) -> Edges:
    known = modules(root, packages)
    edges: Edges = {m: {} for m in known}
    for mod, path in known.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for t in targets:
                target = _nearest(t, known)
                if target is not None and target != mod:
                    edges[mod].setdefault(target, node.lineno)
    return edges


def cycles(edges: Edges) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def describe(group: list[str], edges: Edges, known: dict[str, Path], root: Path = REPO) -> str:
    """One shortest cycle through the group's first module, with the line of each import."""
    start = group[0]
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(edges[v]):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                path = path[::-1] + [start]
                return " -> ".join(f"{a} ({known[a].relative_to(root)}:{edges[a][b]})"
                                   for a, b in zip(path, path[1:])) + f" -> {start}"
            if w in group and w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {group}")


def _project_cycles() -> tuple[Edges, dict[str, Path], list[list[str]]]:
    edges = import_graph(REPO, PACKAGES)
    return edges, modules(REPO, PACKAGES), cycles(edges)


@pytest.mark.parametrize("package", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_CYCLES[p])) if p in KNOWN_CYCLES else p
    for p in PACKAGES])
def test_no_import_cycle_inside(package: str) -> None:
    edges, known, groups = _project_cycles()
    inside = [g for g in groups if {m.split(".")[0] for m in g} == {package}]
    assert not inside, "import cycles:\n" + "\n".join(describe(g, edges, known) for g in inside)


def test_no_import_cycle_between_packages() -> None:
    edges, known, groups = _project_cycles()
    across = [g for g in groups if len({m.split(".")[0] for m in g}) > 1]
    assert not across, "import cycles:\n" + "\n".join(describe(g, edges, known) for g in across)


def test_the_walk_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n    return g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyc import a\n"
                              "import cyc.b\n")
    edges = import_graph(tmp_path, ("cyc",))
    assert edges["cyc.c"] == {"cyc.b": 4}  # the TYPE_CHECKING import does not count
    groups = cycles(edges)
    assert groups == [["cyc.a", "cyc.b"]]
    assert describe(groups[0], edges, modules(tmp_path, ("cyc",)), tmp_path).endswith("cyc.b (cyc/b.py:2) -> cyc.a")


@pytest.mark.skipif(importlib.util.find_spec("grimp") is None, reason="grimp not installed (import-linter)")
def test_the_walk_sees_what_grimp_sees() -> None:
    import grimp

    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    ours = import_graph(REPO, PACKAGES)
    theirs = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert {m: set(t) for m, t in ours.items()} == theirs
