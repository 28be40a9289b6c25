"""Which per-event core runs: compiled (Cython) or pure Python.

The modules in HOT are plain Python files that Cython compiles in its
pure-Python mode (types come from the .pxd file beside each one). Both forms
behave the same; the compiled one is what `make setup`, the wheel and the
container image install. Without it the agent still works, and says so once.

- TRACER_PURE=1 in the environment imports the .py sources even where the
  compiled modules exist (tests run both; a user can rule out the compiled
  core when chasing a bug). A comma-separated list of module names makes
  those pure, with the modules that cimport them (bisecting a difference
  between the two).
- A compiled module older than its source (.py or .pxd) is stale: it is reported, and
  `make setup` rebuilds it.

This module imports nothing from the tracer: setup.py reads HOT from it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import platform
import re
import sys
from pathlib import Path

# The per-event path, in pipeline order. setup.py compiles exactly these.
HOT = (
    "tracer.stats",
    "tracer.events",
    "tracer.ring",
    "tracer.connstate",
    "tracer.conn",
    "tracer.protocols.http1",
    "tracer.session_http1",
    "tracer.protocols.http2",
    "tracer.session_http2",
    "tracer.protocols.grpc",
    "tracer.protocols.hpack_partial",
    "tracer.tracecontext",
    "tracer.spans",
    "tracer.correlate",
    "tracer.export.jsonl",
)

ROOT = Path(__file__).resolve().parent.parent
PURE_ENV = "TRACER_PURE"


def source(name: str) -> Path:
    return ROOT.joinpath(*name.split(".")).with_suffix(".py")


class _PureFinder(importlib.abc.MetaPathFinder):
    """Imports HOT modules from their .py files (TRACER_PURE)."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, source(fullname))


_CIMPORT = re.compile(r"^\s*from\s+(tracer(?:\.\w+)+)\s+cimport\b", re.M)


def cimports(name: str) -> frozenset[str]:
    """The HOT modules whose C types `name` uses (the cimports in its .pxd)."""
    try:
        text = source(name).with_suffix(".pxd").read_text()
    except OSError:
        return frozenset()  # an installed wheel without its .pxd: built as a whole
    return frozenset(_CIMPORT.findall(text)) & frozenset(HOT)


def pure_modules() -> frozenset[str]:
    """The HOT modules TRACER_PURE asks to run from source, with every module
    that cimports one of them: a compiled module reads its fields as C, which
    the pure class does not have."""
    raw = os.environ.get(PURE_ENV, "")
    if raw in ("", "0"):
        return frozenset()
    if raw == "1":
        return frozenset(HOT)
    pure = set(HOT) & {m.strip() for m in raw.split(",")}
    grew = True
    while grew:
        grew = False
        for name in HOT:
            if name not in pure and cimports(name) & pure:
                pure.add(name)
                grew = True
    return frozenset(pure)


def pure_requested() -> bool:
    return bool(pure_modules())


def install() -> None:
    """Called by tracer/__init__.py before anything else is imported."""
    names = pure_modules()
    if names and not any(isinstance(f, _PureFinder) for f in sys.meta_path):
        # just ahead of the path finder that would find the extension
        # modules, behind finders that wrap others (atheris's coverage hook)
        at = next((i for i, f in enumerate(sys.meta_path)
                   if f is importlib.machinery.PathFinder), 0)
        sys.meta_path.insert(at, _PureFinder(names))


def _compiled_path(mod) -> str | None:
    loader = getattr(getattr(mod, "__spec__", None), "loader", None)
    if isinstance(loader, importlib.machinery.ExtensionFileLoader):
        return mod.__file__
    return None


def info() -> dict:
    """{"core": "compiled"|"pure"|"mixed", "compiled": [...], "pure": [...],
    "stale": [...], "reason": one line}."""
    compiled, pure, stale = [], [], []
    for name in HOT:
        mod = importlib.import_module(name)
        so = _compiled_path(mod)
        if so is None:
            pure.append(name)
            continue
        compiled.append(name)
        src = source(name)
        try:
            built = os.stat(so).st_mtime
            newer = src.stat().st_mtime > built
        except OSError:
            continue  # an installed wheel has no .py beside its .so: never stale
        # the .pxd beside it holds the C types: editing it changes the build too
        try:
            newer = newer or src.with_suffix(".pxd").stat().st_mtime > built
        except OSError:
            pass
        if newer:
            stale.append(name)
    core = "compiled" if not pure else ("pure" if not compiled else "mixed")
    if core == "compiled":
        reason = f"compiled ({len(compiled)} modules)"
    elif pure_requested():
        reason = f"pure Python for {len(pure)} of {len(HOT)} modules ({PURE_ENV})"
    else:
        reason = (f"pure Python for {len(pure)} of {len(HOT)} modules (not built: "
                  "'make setup' compiles them; spans are the same, the CPU cost higher)")
    if stale:
        reason += f"; stale, older than their source: {', '.join(stale)} (run 'make setup')"
    if "tracer.ring" in pure and platform.machine() not in ("x86_64", "AMD64", "i686"):
        # the compiled ring uses acquire/release atomics; the pure one plain
        # loads and stores, ordered by the hardware only on x86
        reason += (f"; unsupported on {platform.machine()}: the pure-Python ring is correct "
                   "on x86 only (build the core: 'make setup')")
    return {"core": core, "compiled": compiled, "pure": pure, "stale": stale, "reason": reason}
