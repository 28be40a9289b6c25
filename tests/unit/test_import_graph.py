"""No import cycle in tracer/ (#18), checked on the source with `ast`.

Which imports count, and why:
- every `import` / `from ... import` in a module, at module level or inside a
  function, a method or a try block: a function-level import is still a
  dependency, only a deferred one, and a cycle through it breaks as soon as
  someone hoists it;
- importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py` first:
  an edge to each parent package (except the importer's own: those run
  before it);
- `from a import b` where `a.b` is a module: an edge to `a.b` (and to `a`);
- not counted: imports inside `if TYPE_CHECKING:` (never executed; with
  `from __future__ import annotations` they only name types for checkers and
  Cython), and `importlib.import_module(name)` with a computed name (only
  `tracer.core.info()` does that, for the compiled core's modules, after
  start-up).
"""

from __future__ import annotations

import ast
import functools
import graphlib
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = "tracer"

# Cycles through files being changed elsewhere: (cycle as printed, issue text).
# Each is a strict xfail, so the test turns red once the cycle is gone and the
# entry must go. Empty: none is known.
KNOWN_CYCLES: list[tuple[str, str]] = []


def _modules() -> dict[str, tuple[Path, bool]]:
    """dotted name -> (file, is a package)."""
    out = {}
    for path in sorted((ROOT / PKG).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes anywhere in the tree, skipping `if TYPE_CHECKING:` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _owner(mods, name: str) -> str | None:
    """The module a dotted name lives in (a module, or an attribute of one)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _edges(mods, name: str, path: Path, is_pkg: bool) -> dict[str, str]:
    """The tracer modules `name` imports -> "file:line" of the first import."""
    edges: dict[str, str] = {}
    where = path.relative_to(ROOT)

    def add(target: str | None, line: int) -> None:
        if target is None or target == name:
            return
        edges.setdefault(target, f"{where}:{line}")
        # each parent package it runs first; not this module's own ones,
        # which are being imported already when it runs
        while "." in target:
            target = target.rpartition(".")[0]
            if target != name and not name.startswith(target + "."):
                edges.setdefault(target, f"{where}:{line}")

    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PKG or alias.name.startswith(PKG + "."):
                    add(_owner(mods, alias.name), node.lineno)
            continue
        if node.level:
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            src = ".".join(base + ([node.module] if node.module else []))
        else:
            src = node.module or ""
        if src != PKG and not src.startswith(PKG + "."):
            continue
        for alias in node.names:
            sub = f"{src}.{alias.name}"
            add(sub if sub in mods else _owner(mods, src), node.lineno)
    return edges


@functools.cache
def import_graph() -> dict[str, dict[str, str]]:
    """module -> {imported tracer module -> "file:line" of the first import}."""
    mods = _modules()
    return {name: _edges(mods, name, path, is_pkg) for name, (path, is_pkg) in mods.items()}


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a] (a imports b ...), or None."""
    try:
        graphlib.TopologicalSorter({m: set(e) for m, e in graph.items()}).prepare()
    except graphlib.CycleError as e:
        return list(reversed(e.args[1]))  # graphlib lists it against the edges
    return None


def describe(graph, cycle: list[str]) -> str:
    return "\n".join(f"  {a} -> {b}  ({graph[a][b]})" for a, b in itertools.pairwise(cycle))


def _without(graph, cycles: list[str]) -> dict[str, dict[str, str]]:
    """The graph minus the edges of the known cycles."""
    drop = set()
    for text in cycles:
        nodes = [n.strip() for n in text.split("->")]
        drop |= set(itertools.pairwise(nodes))
    return {a: {b: w for b, w in e.items() if (a, b) not in drop} for a, e in graph.items()}


def test_graph_sees_function_level_and_relative_imports():
    """The graph itself: edges this repo is known to have, of each kind."""
    g = import_graph()
    assert "tracer.funcs.cli" in g["tracer.cli"]  # function-level, relative (.funcs.cli)
    assert "tracer.funcs" in g["tracer.cli"]  # its parent package runs first
    assert "tracer.core" in g["tracer"]  # a package's __init__ (from . import core)
    assert "tracer.errors" in g["tracer.funcs.cli"]  # absolute, module level
    assert "tracer.loader" in g["tracer.conn"]  # inside a function
    assert "tracer.conn" not in g["tracer.spans"]  # only under TYPE_CHECKING


def test_find_cycle_reports_the_cycle():
    g = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:2"}, "c": {"a": "c.py:3"}, "d": {}}
    cycle = find_cycle(g)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    text = describe(g, cycle)
    assert len(text.splitlines()) == 3 and "  a -> b  (a.py:1)" in text.splitlines()
    assert find_cycle({"a": {"b": ""}, "b": {}}) is None


def test_no_import_cycle_in_tracer():
    graph = _without(import_graph(), [c for c, _ in KNOWN_CYCLES])
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in tracer/:\n" + describe(graph, cycle)


if KNOWN_CYCLES:  # no empty parameter set (a skip) while none is known
    @pytest.mark.parametrize("cycle", [pytest.param(c, marks=pytest.mark.xfail(
        strict=True, reason=f"known import cycle: {c} ({why})")) for c, why in KNOWN_CYCLES])
    def test_known_cycle_is_gone(cycle):
        g = import_graph()
        nodes = [n.strip() for n in cycle.split("->")]
        assert not all(b in g[a] for a, b in itertools.pairwise(nodes)), cycle


def test_only_the_entry_point_imports_the_cli():
    """Domain code raises (tracer/errors.py) and resolves names
    (tracer/resolve.py) without the command line; only `python -m tracer`
    imports it."""
    g = import_graph()
    assert sorted(m for m, e in g.items() if "tracer.cli" in e) == ["tracer.__main__"]


@pytest.mark.parametrize("leaf,allowed", [
    ("tracer.errors", set()),
    ("tracer.resolve", {"tracer.errors"}),
    ("tracer.core", set()),
])
def test_leaf_modules(leaf, allowed):
    g = import_graph()
    assert set(g[leaf]) - {PKG} == allowed  # the package __init__ runs first anyway
