"""The wheel carries the compiled BPF objects and the compiled core: a target
host needs libbpf.so.1, not clang or a C compiler."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tracer import core

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_bpf_objects(tmp_path):
    if not shutil.which("clang"):
        pytest.skip("clang not installed (make setup installs it)")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tracer/bpf/build/sock.bpf.o" in names
    assert "tracer/bpf/build/features.bpf.o" in names
    assert "tracer/bpf/sock.h" in names
    # the objects are stripped of DWARF but keep the BTF that CO-RE needs
    data = zipfile.ZipFile(wheel).read("tracer/bpf/build/sock.bpf.o")
    assert b".BTF" in data and b".debug_info" not in data
    # and the compiled core: every hot module as an extension module
    for name in core.HOT:
        stem = name.replace(".", "/")
        assert any(n.startswith(stem + ".cpython-") and n.endswith(".so") for n in names), name
