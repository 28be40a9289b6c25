"""Service graph: client/server span pairs -> edges; expiry, eviction and label
bounds, on synthetic spans with a fake clock."""

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.unit.export_spans import make_span
from tests.unit.test_export_prometheus import samples
from tracer.export import prometheus, semconv


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def graph(**kw):
    reg, clock = CollectorRegistry(), Clock()
    g = prometheus.ServiceGraph(reg, clock=clock, **kw)
    return reg, g, clock


def pair(client_service="front", server_service="back", client_ms=30, server_ms=20,
         status=200):
    c = make_span(kind="client", comm=client_service, start_ktime=0,
                  end_ktime=client_ms * 1_000_000, status=status)
    s = make_span(kind="server", comm=server_service, parent_span_id=c.span_id,
                  trace_id=c.trace_id, start_ktime=0, end_ktime=server_ms * 1_000_000,
                  status=status)
    return c, s


def feed(g, span):
    g(span, span.comm, span.duration_ns / 1e9,
      semconv.is_error(span, span.attributes()))


def edge(client="front", server="back", **extra):
    return tuple(sorted({"client": client, "server": server, **extra}.items()))


def scrape(reg):
    return samples(generate_latest(reg).decode())


@pytest.mark.parametrize("client_first", [True, False], ids=["client-first", "server-first"])
def test_a_pair_is_one_edge_request_in_either_order(client_first):
    reg, g, _ = graph()
    for i in range(23):
        c, s = pair(status=500 if i % 5 == 4 else 200)
        for span in ((c, s) if client_first else (s, c)):
            feed(g, span)
    m = scrape(reg)
    assert m[("traces_service_graph_request_total", edge())] == 23
    # server 5xx: both halves are errors; counted once per request
    assert m[("traces_service_graph_request_failed_total", edge())] == 4
    assert m[("traces_service_graph_request_client_seconds_count", edge())] == 23
    assert m[("traces_service_graph_request_server_seconds_count", edge())] == 23
    assert m[("traces_service_graph_request_client_seconds_sum", edge())] == \
        pytest.approx(23 * 0.030)
    assert m[("traces_service_graph_request_server_seconds_sum", edge())] == \
        pytest.approx(23 * 0.020)
    # 20 ms server, 30 ms client: buckets (0.01, 0.025] and (0.025, 0.05]
    assert m[("traces_service_graph_request_server_seconds_bucket", edge(le="0.025"))] == 23
    assert m[("traces_service_graph_request_client_seconds_bucket", edge(le="0.025"))] == 0
    assert m[("traces_service_graph_request_client_seconds_bucket", edge(le="0.05"))] == 23
    assert m[("traces_service_graph_request_client_seconds_bucket", edge(le="+Inf"))] == 23
    assert m[("traces_service_graph_unpaired_spans_total", (("side", "client"),))] == 0
    assert m[("traces_service_graph_unpaired_spans_total", (("side", "server"),))] == 0
    assert m[("httptrace_service_graph_pending_spans", ())] == 0


def test_failed_when_either_half_is_an_error():
    reg, g, _ = graph()
    c, s = pair()
    c.status = 404  # a client 4xx is an error, the server's 404 is not
    s.status = 404
    feed(g, c)
    feed(g, s)
    c, s = pair()
    feed(g, s)
    feed(g, c)
    m = scrape(reg)
    assert m[("traces_service_graph_request_total", edge())] == 2
    assert m[("traces_service_graph_request_failed_total", edge())] == 1


def test_root_server_spans_wait_for_nothing():
    reg, g, clock = graph()
    for _ in range(5):
        feed(g, make_span(kind="server", comm="front", parent_span_id=None))
    assert g.pending() == 0
    clock.now += 10
    m = scrape(reg)
    assert m[("traces_service_graph_unpaired_spans_total", (("side", "server"),))] == 0
    assert not [k for k in m if k[0] == "traces_service_graph_request_total"]


def test_halves_expire_after_the_ttl_and_are_counted():
    reg, g, clock = graph(ttl_s=2.0, sweep_s=0.1)
    c, s = pair()
    feed(g, c)  # its server is never traced
    orphan = make_span(kind="server", comm="back", parent_span_id="00000000000000aa")
    feed(g, orphan)  # its client is not traced
    assert g.pending() == 2
    clock.now += 1.9
    feed(g, make_span(kind="server", parent_span_id=None))  # a root: not held
    assert g.pending() == 2
    clock.now += 0.2
    m = scrape(reg)  # the scrape expires them, with no span arriving
    assert m[("traces_service_graph_unpaired_spans_total", (("side", "client"),))] == 1
    assert m[("traces_service_graph_unpaired_spans_total", (("side", "server"),))] == 1
    assert m[("httptrace_service_graph_pending_spans", ())] == 0
    feed(g, s)  # too late: its client is gone; it waits and expires in turn
    clock.now += 2.1
    m = scrape(reg)
    assert m[("traces_service_graph_unpaired_spans_total", (("side", "server"),))] == 2
    assert not [k for k in m if k[0] == "traces_service_graph_request_total"]


def test_expiry_on_the_agent_thread_between_scrapes():
    _, g, clock = graph(ttl_s=2.0, sweep_s=0.1)
    for _ in range(10):
        feed(g, make_span(kind="client"))
    clock.now += 2.5
    feed(g, make_span(kind="client"))  # sweeps, then waits itself
    assert g.pending() == 1
    assert g.unpaired == {"client": 10, "server": 0}


def test_pending_halves_are_bounded_and_the_evicted_counted():
    reg, g, clock = graph(max_pending=64, ttl_s=60.0)
    clients = [make_span(kind="client") for _ in range(1000)]
    for i, c in enumerate(clients):
        clock.now += 0.001
        feed(g, c)
        assert len(g._clients) <= 64, i
    m = scrape(reg)
    dropped = m[("traces_service_graph_dropped_spans_total", ())]
    pending = m[("httptrace_service_graph_pending_spans", ())]
    assert dropped + pending == 1000
    assert pending <= 64
    # the oldest went: the newest still pair
    s = make_span(kind="server", comm="back", parent_span_id=clients[-1].span_id)
    feed(g, s)
    s = make_span(kind="server", comm="back", parent_span_id=clients[0].span_id)
    feed(g, s)
    m = scrape(reg)
    assert m[("traces_service_graph_request_total", edge(client="python3"))] == 1
    assert m[("httptrace_service_graph_pending_spans", ())] == pending  # -1 paired, +1 held


def test_a_reused_parent_id_counts_the_first_half_unpaired():
    _, g, _ = graph()
    feed(g, make_span(kind="server", parent_span_id="00000000000000bb"))
    feed(g, make_span(kind="server", parent_span_id="00000000000000bb"))
    assert g.pending() == 1
    assert g.unpaired == {"client": 0, "server": 1}


def test_edges_are_capped_and_the_overflow_counted():
    reg, g, _ = graph(max_edges=2)
    for client, server in [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d"), ("a", "b")]:
        c, s = pair(client, server)
        feed(g, c)
        feed(g, s)
    m = scrape(reg)
    edges = {k[1]: v for k, v in m.items() if k[0] == "traces_service_graph_request_total"}
    assert edges == {edge("a", "b"): 2, edge("a", "c"): 1, edge("{other}", "{other}"): 2}
    assert m[("httptrace_service_graph_overflow_total", ())] == 2


def test_raw_edge_keys_stay_bounded():
    _, g, _ = graph(max_edges=2)
    for i in range(100):
        c, s = pair(f"c{i}", "back")
        feed(g, c)
        feed(g, s)
    assert len(g._by_labels) == 3  # two edges and {other}
    assert len(g._edges) <= 8 * 2


def test_metrics_server_feeds_the_graph_from_the_span_sink():
    """The one sink the exporters call (Exports.sink -> MetricsServer.red)
    feeds RED, span metrics and the graph, with the services' names."""
    srv = prometheus.MetricsServer("127.0.0.1", 0, None, [],
                                   semconv.Resources({"python3": "front"}, host="h"))
    c, s = pair("python3", "back")
    srv.red(s)
    srv.red(c)
    m = samples(generate_latest(srv.registry).decode())
    assert m[("traces_service_graph_request_total", edge("front", "back"))] == 1
    assert ("process_cpu_seconds_total", ()) in m


def test_graph_off():
    srv = prometheus.MetricsServer("127.0.0.1", 0, None, [], semconv.Resources(host="h"),
                                   service_graph=False)
    c, s = pair()
    srv.red(c)
    srv.red(s)
    m = samples(generate_latest(srv.registry).decode())
    assert not [k for k in m if k[0].startswith("traces_service_graph")]
    assert m[("httptrace_requests_total", (("kind", "client"), ("method", "GET"),
                                           ("route", "/item/{id}"), ("service", "front")))] == 1
