"""Filters, parent-based head sampling and the adaptive controller, on plain
data (tracer/sampling.py) and through the correlator. No root needed."""

from types import SimpleNamespace

import pytest

from tracer import events, sampling, tracecontext
from tracer.connstate import Conn
from tracer.correlate import Correlator
from tracer.loader import BPF_DIR
from tracer.sampling import AdaptiveController, AdaptiveSpec, FilterSpec, ProcInfo, SpanPolicy
from tracer.spans import Span
from tracer.stats import Stats


def span(path="/api/x", method="GET", pid=10, comm="app"):
    return Span(path=path, method=method, pid=pid, comm=comm)


def ctx(trace_id="0" * 31 + "1", flag=None, parent=None):
    return SimpleNamespace(trace_id=trace_id, flag=flag, sampled=None, parent=parent)


def test_sample_scale_matches_header():
    assert f"#define SAMPLE_SCALE {events.SAMPLE_SCALE}" in (BPF_DIR / "sock.h").read_text()


@pytest.mark.parametrize("value, flag", [
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", True),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", False),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03", True),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02", False),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz", None),
    ("garbage", None),
])
def test_traceparent_flag(value, flag):
    assert tracecontext.header_sampled({"traceparent": value}) is flag


def test_b3_flags():
    assert tracecontext.header_sampled({"b3": "a" * 32 + "-" + "b" * 16 + "-0"}) is False
    assert tracecontext.header_sampled({"b3": "a" * 32 + "-" + "b" * 16 + "-1"}) is True
    assert tracecontext.header_sampled({"b3": "a" * 32 + "-" + "b" * 16}) is None
    assert tracecontext.header_sampled({"b3": "0"}) is False
    assert tracecontext.header_sampled({"x-b3-sampled": "0"}) is False
    assert tracecontext.header_sampled({"x-b3-sampled": "1"}) is True
    assert tracecontext.header_sampled({}) is None
    # a malformed traceparent is ignored, as the correlator ignores it
    assert tracecontext.header_sampled({"traceparent": "junk", "x-b3-sampled": "0"}) is False


def test_ratio_is_deterministic_on_the_low_56_bits():
    t = sampling.ratio_threshold(0.25)
    assert t == 1 << 54
    assert sampling.trace_id_kept("f" * 18 + f"{(1 << 54) - 1:014x}", t)
    assert not sampling.trace_id_kept("0" * 18 + f"{1 << 54:014x}", t)
    assert sampling.trace_id_kept("f" * 32, sampling.ratio_threshold(1.0))
    assert not sampling.trace_id_kept("0" * 31 + "1", sampling.ratio_threshold(0.0))
    # the share kept over many ids is the ratio (ids spread uniformly)
    ids = [f"{i * 0x9E3779B97F4A7C15 % (1 << 128):032x}" for i in range(1, 20001)]
    kept = sum(sampling.trace_id_kept(i, t) for i in ids)
    assert 4800 < kept < 5200


def test_parent_based_decisions():
    st = Stats()
    p = SpanPolicy(None, 0.0, st)  # ratio 0: no root is kept
    assert p(ctx(flag=True), span()) is True  # the caller said sampled
    assert p(ctx(flag=False), span()) is False  # the caller said not
    assert p(ctx(), span()) is False  # a root
    assert (st.spans_sampled_out, st.spans_sampled_out_by_parent) == (2, 1)
    # a local child follows its parent, whatever the ratio says of its trace id
    parent = ctx(flag=True)
    child = ctx(parent=parent)
    grandchild = ctx(parent=child)
    assert p(grandchild, span()) is True
    assert (parent.sampled, child.sampled, grandchild.sampled) == (True, True, True)
    p1 = SpanPolicy(None, 1.0, Stats())
    dropped = ctx(flag=False)
    assert p1(ctx(parent=dropped), span()) is False  # ratio 1, but the parent said 00
    assert p1(ctx(), span()) is True


def test_sampled_out_spans_still_reach_the_metrics_hook():
    seen = []
    p = SpanPolicy(FilterSpec(exclude_paths=["/x"]), 0.0, Stats())
    p.on_sampled_out = seen.append
    a, b = span("/a"), span("/x")
    assert p(ctx(), a) is False and p(ctx(), b) is False
    assert seen == [a]  # sampled out: counted in RED; filtered: not at all


def test_no_sampling_section_honours_no_flags():
    st = Stats()
    p = SpanPolicy(FilterSpec(methods=["GET"]), None, st)
    assert p(ctx(flag=False), span()) is True
    assert st.spans_sampled_out == 0


def test_path_and_method_globs():
    st = Stats()
    p = SpanPolicy(FilterSpec(include_paths=["/api/*", "/v[12]/*"],
                              exclude_paths=["/api/health*", "*.png"],
                              methods=["get", "POST"]), None, st)
    cases = {("/api/users", "GET"): True, ("/v2/x", "POST"): True, ("/v3/x", "GET"): False,
             ("/api/healthz", "GET"): False, ("/api/a.png", "GET"): False,
             ("/api/users", "DELETE"): False, ("/", "GET"): False}
    for (path, method), keep in cases.items():
        assert p(ctx(), span(path, method)) is keep, (path, method)
    assert (st.spans_filtered_path, st.spans_filtered_method, st.spans_filtered) == (4, 1, 5)


def test_service_filters_cached_per_process():
    reads = []

    def exe(pid):
        reads.append(pid)
        return {1: "/usr/sbin/nginx", 2: "/usr/bin/python3.11", 3: "/opt/x"}[pid]

    proc = ProcInfo(read_exe=exe, read_cgroup=lambda pid: f"/system.slice/s{pid}.service",
                    cgroup_id=lambda path: 100 + int(path[15]))
    st = Stats()
    p = SpanPolicy(FilterSpec(processes=["nginx", "py*"], executables=["/usr/*"],
                              cgroups=["/system.slice/s1.*", 102]), None, st, proc)
    assert p(ctx(), span(pid=1, comm="nginx")) is True  # glob path
    assert p(ctx(), span(pid=2, comm="python3")) is True  # by id 102
    assert p(ctx(), span(pid=3, comm="python3")) is False  # exe /opt/x
    assert p(ctx(), span(pid=4, comm="curl")) is False  # comm: /proc not read
    for _ in range(5):
        p(ctx(), span(pid=1, comm="nginx"))
        p(ctx(), span(pid=3, comm="python3"))
    assert reads == [1, 2, 3]  # once per process
    assert (st.spans_filtered_exe, st.spans_filtered_process, st.spans_filtered_cgroup) == (6, 1, 0)
    p2 = SpanPolicy(FilterSpec(cgroups=["/system.slice/s9.*"]), None, Stats(), proc)
    assert p2(ctx(), span(pid=1, comm="nginx")) is False
    assert p2.stats.spans_filtered_cgroup == 1


def test_cgroup_of_a_process_gone_from_proc_comes_from_the_kernel_id():
    walks = []

    def path_of(cg_id):
        walks.append(cg_id)
        return {55: "/system.slice/s1.service"}.get(cg_id, "")

    proc = ProcInfo(read_exe=lambda pid: "", read_cgroup=lambda pid: "",
                    cgroup_id=lambda path: 0, cgroup_path=path_of)
    st = Stats()
    p = SpanPolicy(FilterSpec(cgroups=["/system.slice/*"]), None, st, proc)
    assert p(ctx(), Span(path="/", pid=7, comm="curl", cgroup_id=55)) is True
    assert p(ctx(), Span(path="/", pid=8, comm="curl", cgroup_id=56)) is False
    assert p(ctx(), Span(path="/", pid=9, comm="curl", cgroup_id=0)) is False  # unknown
    assert p(ctx(), Span(path="/", pid=10, comm="curl", cgroup_id=55)) is True
    assert walks == [55, 56]  # the id -> path walk is cached
    ids = SpanPolicy(FilterSpec(cgroups=[56]), None, Stats(), proc)
    assert ids(ctx(), Span(path="/", pid=8, comm="curl", cgroup_id=56)) is True
    assert st.spans_filtered_cgroup == 2


def test_filters_before_sampling_each_span_counted_once():
    st = Stats()
    p = SpanPolicy(FilterSpec(exclude_paths=["/x"]), 0.0, st)
    assert p(ctx(flag=False), span("/x")) is False
    assert (st.spans_filtered, st.spans_sampled_out) == (1, 0)


def test_correlator_applies_the_policy_and_counts():
    out = []
    st = Stats()
    c = Correlator(out.append, st)
    c.policy = SpanPolicy(FilterSpec(exclude_paths=["/skip"]), 0.0, st)
    conn = Conn(None, 1, 0)  # addresses unknown: no connection key
    tid = "0af7651916cd43dd8448eb211c80319c"
    for i, (path, tp) in enumerate([("/a", "01"), ("/b", "00"), ("/skip", "01"), ("/c", None)]):
        h = {"traceparent": f"00-{tid}-b7ad6b716920333{i}-{tp}"} if tp else {}
        ctx_ = c.start(conn, True, 1, 1, h, ts=i + 1)
        c.finish(ctx_, Span(path=path, end_ktime=i + 2))
    assert [s.path for s in out] == ["/a"]
    assert (st.spans_emitted, st.spans_filtered, st.spans_sampled_out) == (1, 1, 2)


# ---- adaptive controller -----------------------------------------------------------

def test_adaptive_engages_in_proportion_and_relaxes_with_hysteresis():
    ctl = AdaptiveController(AdaptiveSpec(enabled=True, ring_fill=0.5, cpu_budget=0.2,
                                          min_keep=0.01, relax_after=3))
    assert ctl.drop_per_scale() == 0
    assert ctl.tick(1, cpu=0.1, fill=0.1, new_drops=0) is False
    assert ctl.tick(2, cpu=0.4, fill=0.0, new_drops=0) is True  # twice the budget: halve
    assert ctl.keep == 0.5 and ctl.engaged == 1
    assert ctl.drop_per_scale() == 32768
    ctl.tick(3, cpu=0.1, fill=0.9, new_drops=0)  # ring 0.9 > 0.5: * 0.5/0.9
    assert ctl.keep == pytest.approx(0.5 * 0.5 / 0.9)
    ctl.tick(4, cpu=0.1, fill=0.0, new_drops=7)  # drops: at least halved
    assert ctl.keep == pytest.approx(0.5 * 0.5 / 0.9 * 0.5)
    low = ctl.keep
    # between the thresholds: no pressure, but not quiet either -> holds
    for t in range(5, 10):
        assert ctl.tick(t, cpu=0.18, fill=0.0, new_drops=0) is False
    # quiet: doubles every 3 ticks, back to 1.0
    changes = [ctl.tick(t, cpu=0.01, fill=0.0, new_drops=0) for t in range(10, 19)]
    assert changes == [False, False, True] * 3  # 0.139 -> 0.278 -> 0.556 -> 1.0
    assert ctl.keep == 1.0 and ctl.drop_per_scale() == 0
    assert ctl.tick(19, cpu=0.01, fill=0.0, new_drops=0) is False
    ctl.tick(23, cpu=1.0, fill=0.0, new_drops=0)
    assert ctl.engaged == 2
    assert [t for t, _ in ctl.transitions] == [2, 3, 4, 12, 15, 18, 23]
    assert ctl.transitions[3] == (12, round(low * 2, 6))


def test_adaptive_floor_and_drop_value():
    ctl = AdaptiveController(AdaptiveSpec(enabled=True, cpu_budget=1e-9, min_keep=0.0))
    ctl.tick(1, cpu=0.5, fill=0.0, new_drops=0)
    assert ctl.drop_per_scale() == events.SAMPLE_SCALE  # every new connection sampled out
    ctl = AdaptiveController(AdaptiveSpec(enabled=True, cpu_budget=1e-9, min_keep=0.25))
    ctl.tick(1, cpu=0.5, fill=0.0, new_drops=0)
    assert ctl.keep == 0.25 and ctl.drop_per_scale() == 49152
    assert "cpu 0.500 > budget 1e-09" in ctl.last_reason


def test_adaptive_carry_over_on_reload():
    old = AdaptiveController(AdaptiveSpec(enabled=True, cpu_budget=0.1))
    old.tick(1, cpu=0.2, fill=0, new_drops=0)
    new = AdaptiveController(AdaptiveSpec(enabled=True, cpu_budget=0.5, min_keep=0.6))
    new.carry_over(old)
    assert new.engaged == 1 and new.transitions == old.transitions and new.keep == 0.6


def test_health_metrics_show_sampling():
    from prometheus_client import CollectorRegistry, generate_latest

    from tracer.export.prometheus import HealthCollector

    ctl = AdaptiveController(AdaptiveSpec(enabled=True, cpu_budget=0.1))
    ctl.tick(1, cpu=0.2, fill=0, new_drops=0)
    st = Stats()
    st.spans_filtered_path = 4
    st.spans_sampled_out = 2
    t = SimpleNamespace(stats=st, rb=None, ring_bytes=1, obj=None, attached=[], adaptive=ctl,
                        _kernel={"conns_sampled_out": 3, "requests_sampled_out": 5})
    reg = CollectorRegistry()
    reg.register(HealthCollector(t, []))
    text = generate_latest(reg).decode()
    for line in ("httptrace_spans_filtered_path_total 4.0", "httptrace_spans_sampled_out_total 2.0",
                 "httptrace_conns_sampled_out_total 3.0", "httptrace_requests_sampled_out_total 5.0",
                 "httptrace_adaptive_keep_ratio 0.5", "httptrace_adaptive_sampling_engaged_total 1.0"):
        assert line + "\n" in text, line
