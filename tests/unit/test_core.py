"""The compiled core: what runs is reported, the pure path gives the same
spans, and CI fails if the suite ran on the pure path by accident."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracer import core

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = "TRACER_REQUIRE_COMPILED"


def test_make_test_runs_on_the_compiled_core():
    """`make test` sets TRACER_REQUIRE_COMPILED=1: every hot module must be an
    extension module built from its current source."""
    info = core.info()
    if os.environ.get(REQUIRE) != "1":
        pytest.skip(f"{REQUIRE} not set (make test sets it); core: {info['reason']}")
    assert info["core"] == "compiled", info["reason"]
    assert not info["stale"], info["reason"]
    for name in core.HOT:
        spec = sys.modules[name].__spec__
        assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader), name


def test_a_pxd_newer_than_the_build_is_stale():
    """The .pxd holds the C types: editing it without a rebuild is reported
    like editing the .py."""
    name = "tracer.stats"
    so = core._compiled_path(sys.modules[name])
    if so is None:
        pytest.skip("tracer.stats is not compiled here")
    pxd = core.source(name).with_suffix(".pxd")
    st = pxd.stat()
    assert name not in core.info()["stale"] or st.st_mtime > os.stat(so).st_mtime
    try:
        later = os.stat(so).st_mtime + 10
        os.utime(pxd, (later, later))
        assert name in core.info()["stale"]
    finally:
        os.utime(pxd, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert pxd.stat().st_mtime_ns == st.st_mtime_ns


def _run(code: str, **env) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, text=True,
                          capture_output=True, env={**os.environ, **env}, timeout=120).stdout


def test_pure_switch_imports_every_hot_module_from_source():
    out = _run("import sys, tracer.core as c; i = c.info(); "
               "print(i['core'], all(sys.modules[m].__file__.endswith('.py') for m in c.HOT)); "
               "print(i['reason'])", TRACER_PURE="1")
    first, reason = out.splitlines()
    assert first == "pure True"
    one = _run("import sys, tracer.core as c; i = c.info(); print(i['core'], i['pure'])",
               TRACER_PURE="tracer.conn, tracer.nothing")
    assert one.strip() == "mixed ['tracer.conn']"
    assert reason == f"pure Python for {len(core.HOT)} of {len(core.HOT)} modules (TRACER_PURE)"


def test_the_pure_ring_is_refused_off_x86():
    """The pure ring's consumer-position store is a plain store: ordered only
    on x86. Elsewhere the reason says so (the compiled ring uses release
    stores, tests/unit/test_ring_ordering.py)."""
    code = ("import platform; platform.machine = lambda: '{m}'; import tracer.core as c; "
            "print(c.info()['reason'])")
    arm = _run(code.format(m="aarch64"), TRACER_PURE="tracer.ring")
    assert "unsupported on aarch64: the pure-Python ring is correct on x86 only" in arm
    assert "unsupported" not in _run(code.format(m="x86_64"), TRACER_PURE="tracer.ring")


SPANS = """
import orjson
from tests.bench.test_bench_parser import _conversations
from tests.unit.h2synth import H2Pair, grpc_frame
from tests.unit.synth import ROLE_SERVER, feed
from tracer.conn import ConnectionTable
from tracer.events import decode, encode
from tracer.stats import Stats
import random
random.seed(7)
out = []
t = ConnectionTable(lambda s: out.append(s.to_dict()), Stats(), 1_700_000_000_000_000_000)
for ev in _conversations(6, 5):
    t.handle(decode(encode(ev)))
p = H2Pair()
for i in range(5):
    sid = p.request("POST", "/pkg.S/M", body=grpc_frame(b"q" * i), grpc=True)
    p.respond(sid, 200, body=grpc_frame(b"r"), trailers={"grpc-status": str(i % 3)})
c = p.conversation(ROLE_SERVER, conn_id=99)
feed(t, c.events)
t.close_all()
t.correlator.close()
print(len(out))
print(orjson.dumps(out, option=orjson.OPT_SORT_KEYS).decode())
print(orjson.dumps(t.stats.as_dict(), option=orjson.OPT_SORT_KEYS).decode())
"""


def test_pure_and_compiled_cores_make_the_same_spans():
    """The same synthetic HTTP/1 and gRPC traffic through both cores: the
    same 35 spans, field for field, and the same counters."""
    compiled = _run(SPANS)
    pure = _run(SPANS, TRACER_PURE="1")
    assert compiled.splitlines()[0] == "35"
    assert compiled == pure


def test_a_pure_module_takes_the_modules_that_cimport_it():
    """A compiled module reads the fields of the classes it cimports as C:
    run from source with them, and the spans stay the same."""
    pure = _run("import tracer.core as c; print(c.info()['pure'])",
                TRACER_PURE="tracer.connstate")
    assert pure.strip() == str(["tracer.connstate", "tracer.conn", "tracer.session_http1",
                                "tracer.session_http2", "tracer.spans", "tracer.correlate",
                                "tracer.export.jsonl"])
    compiled = _run(SPANS)
    for mod in ("tracer.connstate", "tracer.protocols.http1", "tracer.protocols.http2",
                "tracer.events"):
        assert _run(SPANS, TRACER_PURE=mod) == compiled, mod
