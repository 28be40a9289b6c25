"""The counters: the compiled class (stats.pxd) declares exactly COUNTERS."""

from __future__ import annotations

import re
from pathlib import Path

from tracer import stats


def test_pxd_declares_every_counter_in_order():
    pxd = Path(stats.__file__).with_name("stats.pxd").read_text()
    declared = [n.strip() for line in re.findall(r"cdef public object (.+)", pxd)
                for n in line.split(",")]
    assert declared == list(stats.COUNTERS)


def test_counters_start_at_zero_and_are_plain_attributes():
    s = stats.Stats()
    assert s.as_dict() == dict.fromkeys(stats.COUNTERS, 0)
    s.decode_errors += 2
    s.connections_open -= 1
    assert s.as_dict()["decode_errors"] == 2 and s.connections_open == -1
    assert repr(s) == "Stats(decode_errors=2, connections_open=-1)"
