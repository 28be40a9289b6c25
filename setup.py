"""Compiled core: Cython builds the hot modules (tracer/core.py HOT) from their
.py sources in pure-Python mode, typed by the .pxd files beside them. The
rest of the metadata is in pyproject.toml."""

import ast
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import setup

ROOT = Path(__file__).parent


def hot_modules() -> list[str]:
    tree = ast.parse((ROOT / "tracer" / "core.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "HOT":
            return list(ast.literal_eval(node.value))
    raise SystemExit("tracer/core.py has no HOT tuple")


# `make setup` installs the project editable with HTTPTRACE_CORE_INPLACE=1 and
# builds the core in place right after (`make core`): an editable build's
# own copy would only be thrown away.
SKIP = os.environ.get("HTTPTRACE_CORE_INPLACE") == "1"

setup(ext_modules=[] if SKIP else cythonize(
    [str(Path(*m.split(".")).with_suffix(".py")) for m in hot_modules()],
    language_level=3, nthreads=2, quiet=True,
    # bounds and negative-index checks stay on: these modules parse bytes
    # from the network
    compiler_directives={"binding": False},
))
