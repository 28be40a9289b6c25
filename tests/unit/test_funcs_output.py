"""The funcs writer: record schema, log2 histogram, percentiles, summary file."""

import io
import json
import random

from tracer.funcs import output


def _rec(target="/bin/t:f", dur=1000, **kw):
    base = dict(target=target, function="f", module="/bin/t", address=0x1149, pid=1, tid=2,
                comm="t", start_time_unix_nano=5, duration_ns=dur, depth=0,
                args={"a": 1}, retval=7)
    base.update(kw)
    return output.call_record(**base)


def test_record_fields_in_order():
    r = _rec(stack=[output.frame_dict(0x10, "f", 0, "/bin/t")], stack_method="fp")
    assert list(r) == ["schema", "type", "target", "function", "module", "address", "pid",
                       "tid", "comm", "start_time_unix_nano", "duration_ns", "depth", "args",
                       "retval", "stack", "stack_method"]
    assert r["address"] == "0x1149" and r["stack"][0]["addr"] == "0x10"
    assert "stack" not in _rec()


def test_histogram_buckets_and_percentiles():
    st = output.LatencyStats()
    for ns in [0, 1, 2, 3, 1024, 2047, 2048] + [3_000_000] * 93:
        st.add(ns)
    d = st.as_dict()
    assert d["calls"] == 100
    assert d["hist_log2_ns"] == {"1": 2, "2": 2, "1024": 2, "2048": 1, "2097152": 93}
    assert d["p50_ns"] == 3_000_000 and d["max_ns"] == 3_000_000
    assert st.percentile(7) == 2048 and st.percentile(1) == 0
    assert d["percentiles_exact"]
    lines = output.histogram_lines(st)
    assert lines[1].split()[0] == "0" and "|" in lines[-1]


def test_reservoir_keeps_bounded_samples():
    st = output.LatencyStats(max_samples=100, rng=random.Random(1))
    for ns in range(10_000):
        st.add(ns)
    assert len(st.samples) == 100 and st.calls == 10_000 and st.max_ns == 9_999
    assert not st.as_dict()["percentiles_exact"]
    assert 3_000 < st.percentile(50) < 7_000


def test_writer_jsonl_and_summary(tmp_path):
    out = tmp_path / "calls.jsonl"
    err = io.StringIO()
    w = output.FuncsWriter(str(out), stderr=err)
    for i in range(23):
        w.call(_rec(dur=3_000_000 + i, args={"a": i}))
    w.call(_rec(target="/bin/t:g", dur=10))
    s = w.close({"events_seen": 24, "events_dropped": 0})
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 24 and [r["args"]["a"] for r in lines[:23]] == list(range(23))
    summ = json.loads((tmp_path / "calls.jsonl.summary.json").read_text())
    assert summ == json.loads(json.dumps(s))
    assert summ["functions"]["/bin/t:f"]["calls"] == 23
    assert summ["functions"]["/bin/t:g"]["hist_log2_ns"] == {"8": 1}
    assert summ["events_seen"] == 24 and summ["records"] == 24
    text = err.getvalue()
    assert "tracer: /bin/t:f: calls 23, p50 3.00 ms" in text
    assert "events seen 24, events dropped 0" in text
