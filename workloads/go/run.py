"""Build a Go workload (cached by the Go toolchain) and become it: the
harness starts Go servers through this, so a scenario needs no build step.

    python -m workloads.go.run OUT_DIR NAME [--stripped] -- ARGS...
"""

from __future__ import annotations

import argparse
import os
import sys

from workloads.go import build


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("name")
    ap.add_argument("--stripped", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    args = argv[cut + 1:]
    os.makedirs(a.out_dir, exist_ok=True)
    try:
        exe = build.build(a.out_dir, a.name, stripped=a.stripped)
    except build.GoMissing as e:
        print(f"workloads.go.run: {e}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    os.execv(exe, [str(exe), *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
