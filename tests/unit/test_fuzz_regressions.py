"""Inputs the fuzzers found (tests/fuzz/regressions/<target>-<label>): each
must now pass its target's invariants (no exception, counted, bounded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

CASES = sorted((Path(__file__).resolve().parents[1] / "fuzz" / "regressions").glob("*-*"))


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_regression(path):
    target = path.name.split("-", 1)[0]
    TARGETS[target][0](path.read_bytes())


def test_regressions_exist():
    assert CASES, "tests/fuzz/regressions holds the inputs fuzzing found"
