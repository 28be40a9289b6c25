"""--inject in user space, no root: the Python mirror of inject.h against the
object's BTF, the event decode, the FIFO of injected ids, and how the
correlator gives a client span exactly the ids the kernel wrote."""


import pytest

from tests.unit.btfcheck import assert_enum_matches, assert_struct_matches, btf_types
from tests.unit.synth import (
    ROLE_CLIENT,
    ROLE_SERVER,
    Clock,
    Conversation,
    http_request,
    http_response,
)
from tracer import inject, loader
from tracer.conn import ConnectionTable
from tracer.stats import Stats

KTRACE = "0af7651916cd43dd8448eb211c80319c"  # the kernel's trace id
KSPAN = "b7ad6b7169203331"  # the client span id written into the header
KPARENT = "53995c3f42cd8ad8"  # the kernel's id for the thread's server span
UP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UP_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def btf():
    return btf_types("inject")


@pytest.mark.parametrize("cname", sorted(inject.STRUCTS))
def test_struct_layout_matches_btf(btf, cname):
    assert_struct_matches(btf, cname, inject.STRUCTS[cname])


@pytest.mark.parametrize("ename", sorted(inject.ENUMS))
def test_enum_values_match_btf(btf, ename):
    assert_enum_matches(btf, ename, inject.ENUMS[ename])


def test_constants_match_header():
    text = (loader.BPF_DIR / "inject.h").read_text()
    for name in ("TRACEPARENT_LEN", "INJECT_SCAN", "CTX_SCAN"):
        assert f"#define {name} {getattr(inject, name)} " in text
    assert len(f"traceparent: 00-{KTRACE}-{KSPAN}-01\r\n") == inject.TRACEPARENT_LEN


def _inj(ts=10**18, parent=KPARENT, tid=201, lport=50000, rport=9090, span=KSPAN):
    return inject.Injected(200, tid, lport, rport, ts, KTRACE, span, parent, True)


def test_decode_roundtrip_and_bad_records():
    for inj in (_inj(), _inj(parent=None)):
        assert inject.decode(inject.encode(inj)) == inj
    assert _inj().traceparent == f"00-{KTRACE}-{KSPAN}-01"
    with pytest.raises(inject.DecodeError, match="expected"):
        inject.decode(inject.encode(_inj())[:-1])
    with pytest.raises(inject.DecodeError, match="type 9"):
        inject.decode(b"\x09" + inject.encode(_inj())[1:])


def test_waiting_is_fifo_per_connection_and_skips_requests_never_seen():
    w = inject.Waiting()
    w.add(_inj(ts=100, span="1" * 16))
    w.add(_inj(ts=200, span="2" * 16))
    w.add(_inj(ts=300, span="3" * 16))
    w.add(_inj(ts=150, lport=50001, span="4" * 16))
    assert w.take(200, 201, 50000, 9090, 90).span_id == "1" * 16
    # the head of the request written at ts 250 was seen; the one at 200 was not
    assert w.take(200, 201, 50000, 9090, 250).span_id == "3" * 16
    assert w.unclaimed == 1
    assert w.take(200, 201, 50000, 9090, 0) is None
    assert w.take(200, 999, 50001, 9090, 0) is None  # another thread
    w.expire(150 + inject.STALE_NS)
    assert w.count == 0 and w.unclaimed == 2


def test_waiting_refills_once_on_a_miss():
    w = inject.Waiting()
    calls = []
    w.refill = lambda: (calls.append(1), w.add(_inj(ts=5)))
    assert w.take(200, 201, 50000, 9090, 1).span_id == KSPAN
    assert calls == [1]


def _run(events, injected):
    spans, stats = [], Stats()
    table = ConnectionTable(spans.append, stats)
    w = inject.Waiting()
    for inj in injected:
        w.add(inj)
    table.correlator.injected = w.take
    for ev in events:
        table.handle(ev)
    table.correlator.close()
    return {(s.comm, s.kind): s for s in spans}, stats


def _frontend_backend(upstream_headers=None):
    """frontend (pid 200, tid 201) -> backend; the backend receives
    the traceparent the kernel wrote, the frontend's capture has none."""
    c = Clock()
    convs = {
        "fsrv": Conversation(c, 2, ROLE_SERVER, pid=200, tid=201, comm="front", laddr="10.0.0.1",
                             lport=8080, raddr="10.0.0.2", rport=40000),
        "fcli": Conversation(c, 3, ROLE_CLIENT, pid=200, tid=201, comm="front", laddr="10.0.0.1",
                             lport=50000, raddr="10.0.0.3", rport=9090),
        "bsrv": Conversation(c, 4, ROLE_SERVER, pid=300, tid=301, comm="back", laddr="10.0.0.3",
                             lport=9090, raddr="10.0.0.1", rport=50000),
    }
    ev = []
    for conv in convs.values():
        ev.append(conv.open())
    up = http_request("GET", "/front", upstream_headers or {})
    ev += convs["fsrv"].request(up)
    ev += convs["fcli"].request(http_request("GET", "/back", {}))
    ev += convs["bsrv"].request(http_request(
        "GET", "/back", {"traceparent": f"00-{KTRACE}-{KSPAN}-01"}))
    ev += convs["bsrv"].response(http_response(200, body=b"b"))
    ev += convs["fcli"].response(http_response(200, body=b"b"))
    ev += convs["fsrv"].response(http_response(200, body=b"f"))
    return ev


def test_client_span_takes_the_injected_ids_and_its_server_span_the_kernels_ids():
    s, stats = _run(_frontend_backend(), [_inj()])
    fsrv, fcli, bsrv = s[("front", "server")], s[("front", "client")], s[("back", "server")]
    assert (fcli.trace_id, fcli.span_id, fcli.parent_span_id) == (KTRACE, KSPAN, KPARENT)
    assert fcli.correlation_source == "header"
    assert (fsrv.trace_id, fsrv.span_id, fsrv.parent_span_id) == (KTRACE, KPARENT, None)
    assert (bsrv.trace_id, bsrv.parent_span_id) == (KTRACE, KSPAN)
    assert stats.spans_injected == 1 and stats.injected_conflicts == 0


def test_incoming_traceparent_keeps_its_trace_and_parent():
    # the kernel's thread context took the incoming trace id
    s, _ = _run(_frontend_backend({"traceparent": f"00-{KTRACE}-{UP_SPAN}-01"}), [_inj()])
    fsrv, fcli = s[("front", "server")], s[("front", "client")]
    assert (fsrv.trace_id, fsrv.span_id, fsrv.parent_span_id) == (KTRACE, KPARENT, UP_SPAN)
    assert (fcli.parent_span_id, fcli.trace_id) == (KPARENT, KTRACE)


def test_a_server_span_already_in_another_trace_is_not_moved():
    s, stats = _run(_frontend_backend({"traceparent": f"00-{UP_TRACE}-{UP_SPAN}-01"}), [_inj()])
    fsrv, fcli, bsrv = s[("front", "server")], s[("front", "client")], s[("back", "server")]
    assert fsrv.trace_id == UP_TRACE  # the application's explicit context wins
    assert (fcli.trace_id, fcli.span_id) == (KTRACE, KSPAN)  # what the backend received
    assert bsrv.parent_span_id == KSPAN
    assert stats.injected_conflicts == 1


def test_without_injection_the_thread_link_is_used():
    s, stats = _run(_frontend_backend(), [])
    assert s[("front", "client")].correlation_source == "thread"
    assert stats.spans_injected == 0


def test_a_root_injection_has_no_parent():
    s, _ = _run(_frontend_backend(), [_inj(parent=None)])
    fcli = s[("front", "client")]
    assert (fcli.trace_id, fcli.span_id, fcli.parent_span_id) == (KTRACE, KSPAN, None)


def test_without_sockops_or_sk_msg_the_tracer_correlates_without_injection(monkeypatch):
    from tests.unit.ringsynth import SynthRing
    from tracer.agent import Tracer

    assert inject.unavailable_reason({"sockops": True, "sk_msg": True}) == ""
    reason = inject.unavailable_reason({"sockops": True, "sk_msg": False})
    assert reason == "sk_msg refused by this kernel"
    monkeypatch.setattr(inject, "unavailable", lambda: reason)
    # nothing loaded (an empty ring for a source): the probe decides before loading
    t = Tracer(inject_headers=True, tls_plaintext=False, source=SynthRing().reader())
    t.start()
    assert t.inject_unavailable == reason
    assert t.addon("inject").injector is None and t.table.correlator.injected is None
    s = t.stop()
    assert (s["inject_unavailable"], s["inject"]) == (reason, {})


def test_cli_inject_is_off_by_default_and_checks_its_rate():
    from tracer.cli import UsageError, _check_args, build_parser

    args = build_parser().parse_args(["run"])
    assert args.inject is False
    args = build_parser().parse_args(["run", "--inject", "--inject-sample-rate", "1.5"])
    with pytest.raises(UsageError, match="inject-sample-rate"):
        _check_args(args)
