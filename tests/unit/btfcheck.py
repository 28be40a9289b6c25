"""One check for every ctypes mirror of a BPF header (sock.h, inject.h,
funcs.h, kfuncs.h): the compiled object's BTF is the truth, the mirror must
match it member by member. No root needed."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess

import pytest

from tracer import loader


def btf_types(obj: str) -> dict[tuple[str, str | None], dict]:
    """(kind, name) -> BTF type of tracer/bpf/build/<obj>.bpf.o."""
    if not shutil.which("bpftool"):
        pytest.skip("bpftool not installed (make setup installs it)")
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(loader.object_path(obj))],
                         check=True, capture_output=True, text=True).stdout
    return {(t["kind"], t.get("name")): t for t in json.loads(out)["types"]}


def assert_struct_matches(btf: dict, cname: str, pytype: type[ctypes.Structure]) -> None:
    t = btf[("STRUCT", cname)]
    assert t["size"] == ctypes.sizeof(pytype), f"sizeof(struct {cname})"
    assert [(m["name"], m["bits_offset"] // 8) for m in t["members"]] == [
        (name, getattr(pytype, name).offset) for name, *_ in pytype._fields_], cname


def assert_enum_matches(btf: dict, ename: str, enum) -> None:
    t = btf[("ENUM", ename)]
    assert {v["name"]: v["val"] for v in t["values"]} == {m.name: int(m) for m in enum}, ename
