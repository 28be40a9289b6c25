"""Inputs the fuzzers found (tests/fuzz/regressions/<target>-<label>), each
replayed against the target that found it: each must now pass its target's
invariants (no exception, counted, bounded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

CASES = sorted((Path(__file__).resolve().parents[1] / "fuzz" / "regressions").glob("*-*"))

# What an input must do on its way, so that it keeps reaching the code its fix
# is in (a target's invariants alone pass as well when the input stops short).
REACHES = {
    # the http1 target pins Http1Session, but the input's first step expires
    # the connection: its next bytes open a new one, sniffed as HTTP/2, and
    # reach the CONTINUATION-without-HEADERS fix in tracer/protocols/http2.py
    "http1-continuation-without-headers": {"connections_expired": 1, "h2_connections": 1,
                                           "h2_headers_lost": 1},
    "http2-continuation-without-headers": {"h2_connections": 1, "h2_headers_lost": 1},
    "conn-direction-out-of-range": {"decode_errors": 2},
}


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_regression(path):
    target = path.name.split("-", 1)[0]
    assert target in TARGETS, f"{path.name}: name it <target>-<label>, target one of {TARGETS}"
    stats = TARGETS[target][0](path.read_bytes())
    want = REACHES.get(path.name)
    if want:
        assert {k: getattr(stats, k) for k in want} == want


def test_regressions_exist():
    assert CASES, "tests/fuzz/regressions holds the inputs fuzzing found"
    assert set(REACHES) <= {p.name for p in CASES}
