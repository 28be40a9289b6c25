"""pytest markers: each one declared in pyproject.toml is applied where it
means something, and none is applied undeclared. Root is not a marker: a
test that needs root lives in tests/kernel or tests/e2e, whose fixtures skip
it without root, naming the reason (a marker on a few of them would make
`-m 'not root'` deselect some and run the rest)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings",
           "timeout", "benchmark"}


def _declared() -> set[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {m.split(":", 1)[0].strip() for m in cfg["tool"]["pytest"]["ini_options"]["markers"]}


def _used() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for f in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "mark" and ast.unparse(node.value.value) == "pytest":
                used.setdefault(node.attr, set()).add(str(f.relative_to(ROOT)))
    return used


def test_declared_markers_are_the_used_ones():
    custom = {m for m in _used() if m not in BUILTIN}
    assert custom == _declared()


def test_no_root_marker():
    assert "root" not in _declared()
    assert "root" not in _used()
