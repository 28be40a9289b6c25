"""The agent on recorded ring records (no root, no BPF): Tracer with a
source in place of sock.bpf.o's ring runs its loop, the connection table,
correlation and the sink; the summary is assembled from the kernel side's
counters table and the add-ons' counters."""

from __future__ import annotations

import threading
import time

import pytest

from tests.unit.ringsynth import ring_of
from tests.unit.synth import ROLE_SERVER, Clock, Conversation, http_request, http_response
from tracer import agent, inject, loader
from tracer.addons import Addon
from tracer.events import Counter, DecodeError, decode, encode
from tracer.sock import KERNEL_COUNTERS

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
METHODS = ("GET", "POST", "PUT", "DELETE")
STATUSES = (200, 201, 404, 503)
N = 23  # exchanges, on 3 keep-alive connections: 8 + 8 + 7


class RecordedRing:
    """A source (tracer/sock.py) of recorded records: the bytes the kernel
    submits, each decoded by tracer.events as the ring would, then handed to
    the agent's handler. `done` is set once the last one is consumed."""

    def __init__(self, records: list[bytes], counters: dict[Counter, int] | None = None):
        self.records = records
        self.next = 0
        self.recorded = counters if counters is not None else {Counter.CTR_EVENTS: len(records)}
        self.done = threading.Event()
        self.consumes: list[int] = []  # records handed out per consume_events call

    def poll(self, timeout_ms: int) -> bool:
        if self.available():
            return True
        time.sleep(timeout_ms / 1000)  # idle, as epoll would be
        return False

    def available(self) -> int:
        return sum((len(r) + 8 + 7) & ~7 for r in self.records[self.next:])

    def consume_events(self, handle, stats, limit: int = 0) -> int:
        end = len(self.records) if not limit else min(len(self.records), self.next + limit)
        n = 0
        while self.next < end:
            rec = self.records[self.next]
            self.next += 1
            n += 1
            try:
                ev = decode(rec)
            except DecodeError:
                stats.decode_errors += 1
            else:
                handle(ev)
        if self.next == len(self.records):
            self.done.set()
        self.consumes.append(n)
        return n

    def counters(self) -> dict[Counter, int]:
        return self.recorded

    def close(self) -> None:
        pass


class InPlaceRing(RecordedRing):
    """The same records laid out in ring memory as the kernel writes them,
    read in place by the ring consumer (tracer/ring.py, compiled or not)."""

    def __init__(self, records: list[bytes]):
        super().__init__(records)
        self.reader = ring_of(records).reader()

    def available(self) -> int:
        return self.reader.available()

    def consume_events(self, handle, stats, limit: int = 0) -> int:
        n = self.reader.consume_events(handle, stats, limit)
        self.next += n
        if not self.reader.available():
            self.done.set()
        self.consumes.append(n)
        return n


def exchanges():
    """Records of N request/response exchanges on 3 interleaved keep-alive
    server connections (ktime near now, as a recording would be), and what
    each span must be."""
    clock = Clock(t0=time.monotonic_ns())
    convs = [Conversation(clock, conn_id=10 + c, role=ROLE_SERVER, pid=4000, tid=4001 + c,
                          comm="api", lport=8080, raddr="10.0.0.9", rport=41000 + c)
             for c in range(3)]
    events, want = [], []
    for c in convs:
        events.append(c.open())
    for i in range(N):
        c = convs[i % 3]
        method, status = METHODS[i % 4], STATUSES[i % 4]
        parent = f"{i + 1:016x}"
        body = b"x" * (i * 10) if method in ("POST", "PUT") else b""
        req = c.request(http_request(method, f"/items/{i}?page={i}",
                                     {"traceparent": f"00-{TRACE}-{parent}-01"}, body))
        resp_body = b"r" * (100 + i)
        resp = c.response(http_response(status, body=resp_body), splits=[40])  # two writes
        events += req + resp
        want.append({"method": method, "path": f"/items/{i}", "query": f"page={i}",
                     "status": status, "parent_span_id": parent, "peer_port": c.rport,
                     "tid": c.tid, "start_ktime": req[0].ts_exit, "end_ktime": resp[-1].ts_exit})
    for c in convs:
        events.append(c.close())
    return [encode(ev) for ev in events], want


def replay(source, **kw):
    spans = []
    t = agent.Tracer(sink=spans.append, source=source, tls_plaintext=False, **kw)
    t.start()
    t.run(duration=30, stop=source.done)
    return t, spans, t.stop()


@pytest.mark.parametrize("ring", [RecordedRing, InPlaceRing])
def test_23_exchanges_replayed_give_23_exact_spans(ring, monkeypatch):
    monkeypatch.setattr(agent, "CONSUME_BATCH", 16)  # several turns of the loop
    records, want = exchanges()
    src = ring(records)
    t, spans, s = replay(src)
    assert len(spans) == N
    got = sorted(spans, key=lambda sp: sp.start_ktime)
    for sp, w in zip(got, want, strict=True):
        assert (sp.kind, sp.protocol, sp.method, sp.path, sp.query, sp.status) == \
            ("server", "http1", w["method"], w["path"], w["query"], w["status"])
        assert (sp.start_ktime, sp.end_ktime) == (w["start_ktime"], w["end_ktime"])
        assert sp.start_time_unix_nano == w["start_ktime"] + t.clock_offset_ns
        assert (sp.trace_id, sp.parent_span_id, sp.correlation_source) == \
            (TRACE, w["parent_span_id"], "header")
        assert (sp.pid, sp.tid, sp.comm, sp.local_port, sp.peer_port) == \
            (4000, w["tid"], "api", 8080, w["peer_port"])
    assert len({sp.span_id for sp in spans}) == N
    # every record went through the loop in batches of CONSUME_BATCH, none at stop()
    assert src.consumes[:-1] == [16] * (len(records) // 16) + [len(records) % 16]
    assert src.consumes[-1] == 0
    assert s["events_delivered"] == s["events_handled"] == s["events_seen"] == len(records)
    assert (s["events_dropped"], s["decode_errors"], s["unparsed_bytes"],
            s["incomplete_requests"], s["unpaired_responses"]) == (0, 0, 0, 0, 0)
    assert (s["spans_emitted"], s["connections_total"], s["connections_open"]) == (N, 3, 0)
    assert (s["programs_attached"], s["programs_skipped"], s["read_faults"]) == (0, {}, 0)
    assert (s["adaptive_keep"], s["tls_unavailable"], s["tls_libraries"]) == (1.0, "", [])
    assert "inject" not in s and "span_stack_failed" not in s


def test_recorded_counters_and_a_bad_record_reach_the_summary():
    records, _ = exchanges()
    records.insert(5, records[5][:20])  # truncated: shorter than any header
    kern = {Counter.CTR_EVENTS: len(records) + 4, Counter.CTR_DROPPED: 4,
            Counter.CTR_READ_FAULT: 2, Counter.CTR_EXIT_UNREACHED: 1}
    _, spans, s = replay(RecordedRing(records, kern))
    assert len(spans) == N
    assert (s["events_seen"], s["events_dropped"], s["events_delivered"],
            s["decode_errors"]) == (len(records) + 4, 4, len(records), 1)
    assert (s["read_faults"], s["exit_unreached"], s["conn_table_full"]) == (2, 1, 0)


def test_housekeeping_ticks_add_ons_on_replay(monkeypatch):
    """The run loop's housekeeping (expiry, held spans, counters, add-on
    ticks) on recorded ktimes: nothing expires, every add-on ticks."""
    monkeypatch.setattr(agent, "HOUSEKEEPING_S", 0.05)
    records, _ = exchanges()
    calls = []

    class Count(Addon):
        name = "count"

        def tick(self, now_ns):
            calls.append(now_ns)

    spans = []
    t = agent.Tracer(sink=spans.append, source=RecordedRing(records), tls_plaintext=False,
                     addons=[Count()])
    t.start()
    t.run(duration=0.3)
    s = t.stop()
    assert len(calls) >= 2 and calls == sorted(calls)
    assert (len(spans), s["connections_expired"], s["events_seen"]) == (N, 0, len(records))


def test_add_ons_driven_through_one_interface_in_order(caplog):
    """Every hook in its place; a feature that cannot run says why in one line,
    the rest keeps tracing; the summary takes each add-on's counters."""
    records, _ = exchanges()
    log = []

    class Probe(Addon):
        name = "probe"
        drains = True

        def wrap(self, sink):
            log.append("wrap")

            def counted(span):
                log.append("span")
                sink(span)
            return counted

        def start(self, kernel, table):
            log.append(("start", kernel.rb is src))

        def begin(self):
            log.append("begin")

        def drain(self):
            log.append(("drain", src.next))  # before the records of the poll are read

        def stop(self):
            log.append("stop")

        def close(self):
            log.append("close")

        def counters(self):
            return {"probe_spans": log.count("span")}

    class Broken(Addon):
        name = "broken"
        warning = "broken feature off"

        def start(self, kernel, table):
            raise loader.AttachError("cannot attach uprobe x: EPERM", program="x")

        def close(self):
            log.append("broken closed")

    src = RecordedRing(records)
    spans = []
    t = agent.Tracer(sink=spans.append, source=src, tls_plaintext=False,
                     addons=[Probe(), Broken()])
    with caplog.at_level("WARNING", logger="tracer.agent"):
        t.start()
    assert [r.getMessage() for r in caplog.records] == [
        "broken feature off (cannot attach uprobe x: EPERM); tracing the rest"]
    assert t.addon("broken").unavailable == "cannot attach uprobe x: EPERM"
    t.run(stop=src.done)
    s = t.stop()
    assert [x for x in log if x != "span"] == [
        "wrap", ("start", True), "broken closed", "begin", ("drain", 0),
        "stop", ("drain", len(records)), "close"]
    assert len(spans) == log.count("span") == s["probe_spans"] == N


def test_bpf_add_ons_are_unavailable_on_replay_and_spans_flow(monkeypatch, caplog):
    monkeypatch.setattr(inject, "unavailable", lambda: "")  # sockops and sk_msg "work"
    records, _ = exchanges()
    spans = []
    src = RecordedRing(records)
    t = agent.Tracer(sink=spans.append, source=src, tls_plaintext=True, inject_headers=True,
                     span_stacks=True)
    with caplog.at_level("WARNING", logger="tracer.agent"):
        t.start()
    why = "sock.bpf.o is not loaded (records are replayed)"
    assert (t.tls_unavailable, t.inject_unavailable, t.addon("span_stacks").unavailable) == \
        (why, why, why)
    assert t.tls is None and t.table.correlator.injected is None
    assert len(caplog.records) == 2  # TLS and span stacks; --inject is said by the CLI
    t.run(stop=src.done)
    s = t.stop()
    assert len(spans) == N and all(sp.stack is None for sp in spans)
    assert (s["tls_unavailable"], s["inject_unavailable"], s["inject"]) == (why, why, {})
    assert (s["span_stack_failed"], s["spans_with_stack"]) == (0, 0)


def test_each_kernel_counter_is_named_once_for_reading_and_summary():
    """KERNEL_COUNTERS covers the enum; read from the counters map by it,
    and the summary shows the same values under the same keys."""
    assert set(KERNEL_COUNTERS) == set(Counter) - {Counter.CTR_MAX}
    keys = [key for key, _ in KERNEL_COUNTERS.values()]
    assert len(set(keys)) == len(keys)

    class Counters:
        def percpu_sum(self, c):
            return 100 + int(c)

    class Obj:
        def map(self, name):
            assert name == "counters"
            return Counters()

    for stacks in (False, True):
        t = agent.Tracer(tls_plaintext=False, span_stacks=stacks)
        t.kernel.obj = Obj()
        k = t.read_kernel_counters()
        s = t.summary()
        t.kernel.obj = None
        assert k == {key: 100 + int(c) for c, (key, _) in KERNEL_COUNTERS.items()}
        assert (t.stats.events_seen, t.stats.events_dropped) == (100, 101)
        for c, (key, owner) in KERNEL_COUNTERS.items():
            if owner is None or stacks:
                assert s[key] == 100 + int(c), key
            else:
                assert key not in s
        assert t._kernel["conns_sampled_out"] == 108  # what /metrics reads




def test_housekeeping_waits_for_the_ring_to_drain(monkeypatch):
    """A backlog bigger than one consume batch, recorded 30 s ago: a
    client -> frontend -> backend request whose backend read ends one batch
    and whose frontend write (the backend span's parent, seen late: the
    race of two CPUs) starts the next. Housekeeping that ran between the two
    batches gave up on the pending backend context (its evidence still in
    the ring): the backend span lost its parent. It waits for the ring to
    drain, so the chain resolves exactly."""
    from tests.unit.synth import DataEvent
    from tests.unit.test_correlate import Chain

    monkeypatch.setattr(agent, "HOUSEKEEPING_S", 0.0)  # due after every batch
    clock = Clock(t0=time.monotonic_ns() - 30 * 10**9)
    ch = Chain(clock=clock)
    ch.open()
    ch.request(0, race=True)
    front_write = min(i for i, ev in enumerate(ch.events)
                      if isinstance(ev, DataEvent) and ev.conn_id == ch.fcli.conn_id)
    assert ch.events[front_write - 1].conn_id == ch.bsrv.conn_id  # the backend's read
    other = Conversation(clock, conn_id=90, role=ROLE_SERVER, pid=4000, tid=4001, comm="api",
                         lport=8081, raddr="10.0.0.9", rport=42000)
    filler = [other.open()]
    while len(filler) < agent.CONSUME_BATCH - front_write:
        filler += other.request(http_request("GET", "/f"))
        filler += other.response(http_response(200))
    filler = filler[:agent.CONSUME_BATCH - front_write]
    records = [encode(ev) for ev in filler + ch.events]
    source = RecordedRing(records)
    t, spans, s = replay(source)
    assert source.consumes[0] == agent.CONSUME_BATCH and len(source.consumes) >= 2
    (fcli,) = [sp for sp in spans if sp.comm == "front" and sp.kind == "client"]
    (back,) = [sp for sp in spans if sp.comm == "back"]
    assert back.parent_span_id == fcli.span_id
    assert s["correlation_unresolved"] == 0
