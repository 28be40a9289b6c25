"""setuptools hook: compile the CO-RE BPF objects so wheels carry them.

A target host then needs only libbpf.so.1, not clang. If clang is missing but
objects were already built (e.g. building a wheel from an sdist that has them),
the existing objects are used.
"""

import shutil
import subprocess
from pathlib import Path

from setuptools.command.build_py import build_py

BPF_DIR = Path(__file__).parent / "tracer" / "bpf"


class BuildPyWithBPF(build_py):
    def run(self):
        have_objs = any((BPF_DIR / "build").glob("*.bpf.o"))
        if shutil.which("clang") and shutil.which("bpftool"):
            subprocess.run(["make", "-C", str(BPF_DIR)], check=True)
        elif not have_objs:
            raise SystemExit("BPF objects missing and clang/bpftool not found: run 'make setup' first")
        super().run()
