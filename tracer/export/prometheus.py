"""`--metrics HOST:PORT`: Prometheus /metrics from a dedicated registry.

Observed on the agent thread per span (label children cached per raw span key):
    httptrace_requests_total{service,kind,method,route}
    httptrace_request_errors_total{service,kind,method,route}
    httptrace_request_duration_seconds{service,kind,method,route}  (histogram)
    traces_spanmetrics_calls_total{service,span_name,span_kind,status_code}
    traces_spanmetrics_latency{service,span_name,span_kind,status_code}  (histogram, s)
`route` is the path with ids templated (/item/123 -> /item/{id}); at most
`max_series` label sets exist, later ones share route="{other}" (span_name
"GET {other}") and are counted in httptrace_route_overflow_total. Errors follow
the span status (semconv.is_error). The span metrics are Beyla's/Tempo's.

Service graph (ServiceGraph): a client span and the server span whose parent
it is make one edge request, as Tempo and the OTel servicegraph connector pair
them:
    traces_service_graph_request_total{client,server}
    traces_service_graph_request_failed_total{client,server}  (either half ERROR)
    traces_service_graph_request_server_seconds{client,server}  (histogram)
    traces_service_graph_request_client_seconds{client,server}  (histogram)
Halves wait at most `ttl_s` for each other, at most `max_pending` per side;
the expired are counted by traces_service_graph_unpaired_spans_total{side},
the evicted by traces_service_graph_dropped_spans_total.

Tracer health is read at scrape time (HealthCollector): every Stats counter as
httptrace_<name>_total, ring-buffer fill, exporter counters per exporter, and
per-program BPF run time while BPF stats are on; the agent's process_* metrics.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import threading
import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.utils import floatToGoString

from . import semconv

log = logging.getLogger("tracer.export.prometheus")

# OTel's advisory buckets for http.server.request.duration (seconds)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0)
LABELS = ("service", "kind", "method", "route")
LE = tuple(floatToGoString(b) for b in DURATION_BUCKETS) + ("+Inf",)
OTHER_ROUTE = "{other}"
GAUGES = frozenset({"connections_open"})

# span metrics and service graph: Beyla's metric and label names, OTLP's enum
# names as values (what Tempo's metrics generator writes)
SPAN_LABELS = ("service", "span_name", "span_kind", "status_code")
SPAN_KIND = {"server": "SPAN_KIND_SERVER", "client": "SPAN_KIND_CLIENT"}
STATUS_UNSET = "STATUS_CODE_UNSET"
STATUS_ERROR = "STATUS_CODE_ERROR"
GRAPH_LABELS = ("client", "server")
OTHER_SERVICE = "{other}"

BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
# struct bpf_prog_info (uapi/linux/bpf.h): byte offsets of the fields read here,
# checked against the kernel's BTF by tests/unit/test_export_prometheus.py
PROG_INFO_RUN_TIME_NS = 192
PROG_INFO_RUN_CNT = 200
PROG_INFO_LEN = 208


def _histogram(fam: HistogramMetricFamily, labels, buckets: list, total: float) -> None:
    """buckets: per-bucket counts, the last one +Inf; exposed cumulative."""
    acc, out = 0, []
    for le, n in zip(LE, buckets, strict=True):
        acc += n
        out.append((le, acc))
    fam.add_metric(labels, out, total)


class _Series:
    """One RED label set: duration buckets (the last +Inf) and sum, apart for
    spans with status ERROR. Written only on the agent thread; a scrape reads
    a copy (list copies are atomic under the GIL; a sum may trail its buckets
    by the observation in flight)."""

    __slots__ = ("ok", "ok_sum", "err", "err_sum", "span_labels")

    def __init__(self, span_labels: tuple) -> None:
        self.ok = [0] * (len(DURATION_BUCKETS) + 1)
        self.err = [0] * (len(DURATION_BUCKETS) + 1)
        self.ok_sum = self.err_sum = 0.0
        self.span_labels = span_labels  # (service, span_name, span_kind)


class RedMetrics:
    """Requests, errors and durations per service/kind/method/route, and the
    same observations as span metrics per service/span name/kind/status; each
    span then goes to the service graph. Called on the agent thread: a dict
    lookup, a bisect and two increments per span, no lock; the families are
    built at scrape time."""

    def __init__(self, registry: CollectorRegistry, resources: semconv.Resources,
                 max_series: int = 1000, *, span_metrics: bool = True,
                 graph: ServiceGraph | None = None) -> None:
        self.resources = resources
        self.route = semconv.RouteCache()
        self.max_series = max_series
        self.span_metrics = span_metrics
        self.graph = graph
        self.overflow = 0  # requests counted under route="{other}"
        self._children: dict[tuple, tuple] = {}  # raw span key -> (series, over, service)
        self._series: dict[tuple, _Series] = {}  # label set -> its series
        registry.register(self)

    def __call__(self, span) -> None:
        key = (span.pid, span.comm, span.kind, span.method, span.path)
        kids = self._children.get(key)
        if kids is None:
            kids = self._resolve(span, key)
        series, over, service = kids
        seconds = span.duration_ns / 1e9
        i = bisect_left(DURATION_BUCKETS, seconds)
        error = semconv.is_error(span, span.attributes() if semconv.is_rpc(span) else {})
        if error:
            series.err[i] += 1
            series.err_sum += seconds
        else:
            series.ok[i] += 1
            series.ok_sum += seconds
        if over:
            self.overflow += 1
        if self.graph is not None:
            self.graph(span, service, seconds, error)

    def _resolve(self, span, key: tuple) -> tuple:
        service = self.resources.service(span.pid, span.comm)
        labels = (service, span.kind, semconv.method(span), self.route(span.path))
        over = False
        series = self._series.get(labels)
        if series is None:
            if len(self._series) >= self.max_series:
                labels = labels[:3] + (OTHER_ROUTE,)
                over = True
                series = self._series.get(labels)
            if series is None:
                if over and semconv.is_rpc(span):
                    name = OTHER_ROUTE
                else:
                    name = semconv.span_name(span, lambda _path: labels[3])
                series = _Series((service, name, SPAN_KIND.get(span.kind, span.kind)))
                self._series[labels] = series
        kids = (series, over, service)
        if len(self._children) >= 8 * self.max_series:  # raw (pid, path) keys: bound them
            self._children.clear()
        self._children[key] = kids
        return kids

    def collect(self):
        snap = [(labels, list(s.ok), s.ok_sum, list(s.err), s.err_sum, s.span_labels)
                for labels, s in list(self._series.items())]
        req = CounterMetricFamily("httptrace_requests", "Requests traced (spans)",
                                  labels=LABELS)
        err = CounterMetricFamily("httptrace_request_errors",
                                  "Requests whose span status is ERROR (server 5xx, client "
                                  "4xx/5xx, gRPC error codes)", labels=LABELS)
        dur = HistogramMetricFamily("httptrace_request_duration_seconds",
                                    "Request duration (span duration) in seconds",
                                    labels=LABELS)
        for labels, ok, ok_sum, bad, bad_sum, _ in snap:
            n_bad = sum(bad)
            req.add_metric(labels, sum(ok) + n_bad)
            err.add_metric(labels, n_bad)
            _histogram(dur, labels, [x + y for x, y in zip(ok, bad, strict=True)],
                       ok_sum + bad_sum)
        yield req
        yield err
        yield dur
        yield CounterMetricFamily("httptrace_route_overflow",
                                  "Requests counted under route=\"{other}\": too many label "
                                  "sets", value=self.overflow)
        if not self.span_metrics:
            return
        calls = CounterMetricFamily("traces_spanmetrics_calls",
                                    "Spans per service, span name, kind and status",
                                    labels=SPAN_LABELS)
        lat = HistogramMetricFamily("traces_spanmetrics_latency",
                                    "Span duration in seconds, per service, span name, kind "
                                    "and status", labels=SPAN_LABELS)
        for _, ok, ok_sum, bad, bad_sum, span_labels in snap:
            for status, buckets, total in ((STATUS_UNSET, ok, ok_sum),
                                           (STATUS_ERROR, bad, bad_sum)):
                n = sum(buckets)
                if n == 0 and status == STATUS_ERROR:  # the ERROR series once one is seen
                    continue
                calls.add_metric(span_labels + (status,), n)
                _histogram(lat, span_labels + (status,), buckets, total)
        yield calls
        yield lat


class _Edge:
    """One service-graph edge; written on the agent thread under the graph's lock."""

    __slots__ = ("client", "client_sum", "server", "server_sum", "failed")

    def __init__(self) -> None:
        self.client = [0] * (len(DURATION_BUCKETS) + 1)
        self.server = [0] * (len(DURATION_BUCKETS) + 1)
        self.client_sum = self.server_sum = 0.0
        self.failed = 0


class ServiceGraph:
    """Edges between services from client/server span pairs.

    A server span waits under its parent id, a client span under its own id,
    until the other half arrives (on the agent thread, in either order: the
    correlator may hold a server span) or `ttl_s` passes. Each side holds at
    most `max_pending` halves; when full, the oldest eighth goes (counted).
    Halves are kept in insertion order, which is deadline order, so expiry
    reads from the front; it runs every `sweep_s` and at each scrape, under a
    lock (uncontended but for scrapes)."""

    def __init__(self, registry: CollectorRegistry, max_edges: int = 1000,
                 max_pending: int = 4096, ttl_s: float = 2.0, sweep_s: float = 0.1,
                 clock=time.monotonic) -> None:
        self.max_edges = max_edges
        self.max_pending = max_pending
        self.ttl_s = ttl_s
        self.sweep_s = sweep_s
        self.clock = clock
        # id -> (deadline, service, seconds, error)
        self._clients: dict[str, tuple] = {}  # by the client span's id
        self._servers: dict[str, tuple] = {}  # by the server span's parent id
        self._edges: dict[tuple, tuple] = {}  # (client, server) -> (_Edge, over)
        self._by_labels: dict[tuple, _Edge] = {}  # at most max_edges + 1
        self.unpaired = {"client": 0, "server": 0}
        self.dropped = 0
        self.overflow = 0
        self._lock = threading.Lock()
        self._sweep_at = 0.0
        registry.register(self)

    def __call__(self, span, service: str, seconds: float, error: bool) -> None:
        server = span.kind == "server"
        if server and span.parent_span_id is None:  # a root span: its client is not traced
            return
        now = self.clock()
        with self._lock:
            if now >= self._sweep_at:
                self._sweep(now)
            if server:
                key = span.parent_span_id
                other = self._clients.pop(key, None)
                if other is not None:
                    self._edge(other[1], service, other[2], seconds, other[3] or error)
                    return
                halves = self._servers
            else:
                key = span.span_id
                other = self._servers.pop(key, None)
                if other is not None:
                    self._edge(service, other[1], seconds, other[2], error or other[3])
                    return
                halves = self._clients
            if key in halves or len(halves) >= self.max_pending:
                self._make_room(halves, "server" if server else "client", key)
            halves[key] = (now + self.ttl_s, service, seconds, error)

    def _make_room(self, halves: dict, side: str, key: str) -> None:
        if halves.pop(key, None) is not None:  # the same id again: the first stays alone
            self.unpaired[side] += 1
        else:  # full: the oldest eighth in one go (the front may hold deleted slots)
            n = max(1, self.max_pending // 8)
            for k in list(itertools.islice(halves, n)):
                del halves[k]
            self.dropped += n

    def _edge(self, client: str, server: str, client_s: float, server_s: float,
              failed: bool) -> None:
        kids = self._edges.get((client, server))
        if kids is None:
            kids = self._resolve(client, server)
        edge, over = kids
        edge.client[bisect_left(DURATION_BUCKETS, client_s)] += 1
        edge.client_sum += client_s
        edge.server[bisect_left(DURATION_BUCKETS, server_s)] += 1
        edge.server_sum += server_s
        if failed:
            edge.failed += 1
        if over:
            self.overflow += 1

    def _resolve(self, client: str, server: str) -> tuple:
        labels, over = (client, server), False
        edge = self._by_labels.get(labels)
        if edge is None:
            if len(self._by_labels) >= self.max_edges:
                labels, over = (OTHER_SERVICE, OTHER_SERVICE), True
                edge = self._by_labels.get(labels)
            if edge is None:
                edge = self._by_labels[labels] = _Edge()
        if len(self._edges) >= 8 * self.max_edges:
            self._edges.clear()
        kids = self._edges[(client, server)] = (edge, over)
        return kids

    def _sweep(self, now: float) -> None:
        """Under the lock: drop the halves whose deadline passed."""
        for side, halves in (("client", self._clients), ("server", self._servers)):
            gone = []
            for key, half in halves.items():
                if half[0] > now:
                    break
                gone.append(key)
            for key in gone:
                del halves[key]
            self.unpaired[side] += len(gone)
        self._sweep_at = now + self.sweep_s

    def pending(self) -> int:
        return len(self._clients) + len(self._servers)

    def collect(self):
        with self._lock:
            self._sweep(self.clock())
            unpaired = dict(self.unpaired)
            dropped, overflow, pending = self.dropped, self.overflow, self.pending()
            snap = [(labels, list(e.client), e.client_sum, list(e.server), e.server_sum,
                     e.failed) for labels, e in self._by_labels.items()]
        total = CounterMetricFamily("traces_service_graph_request",
                                    "Requests between two services (client/server span pairs)",
                                    labels=GRAPH_LABELS)
        failed = CounterMetricFamily("traces_service_graph_request_failed",
                                     "Requests between two services whose client or server "
                                     "span status is ERROR", labels=GRAPH_LABELS)
        server_h = HistogramMetricFamily("traces_service_graph_request_server_seconds",
                                         "Server span duration of requests between two "
                                         "services", labels=GRAPH_LABELS)
        client_h = HistogramMetricFamily("traces_service_graph_request_client_seconds",
                                         "Client span duration of requests between two "
                                         "services", labels=GRAPH_LABELS)
        for labels, client, client_sum, server, server_sum, n_failed in snap:
            total.add_metric(labels, sum(client))
            failed.add_metric(labels, n_failed)
            _histogram(client_h, labels, client, client_sum)
            _histogram(server_h, labels, server, server_sum)
        yield from (total, failed, server_h, client_h)
        fam = CounterMetricFamily("traces_service_graph_unpaired_spans",
                                  "Client or server spans whose other half did not arrive "
                                  "in time", labels=["side"])
        for side, n in unpaired.items():
            fam.add_metric([side], n)
        yield fam
        yield CounterMetricFamily("traces_service_graph_dropped_spans",
                                  "Spans dropped unpaired: too many waiting", value=dropped)
        yield GaugeMetricFamily("httptrace_service_graph_pending_spans",
                                "Spans waiting for the other half of their request",
                                value=pending)
        yield CounterMetricFamily("httptrace_service_graph_overflow",
                                  "Edge requests counted under client/server=\"{other}\": too "
                                  "many edges", value=overflow)


class HealthCollector:
    """The tracer's own counters, read when Prometheus scrapes."""

    def __init__(self, tracer, pipelines: list) -> None:
        self.tracer = tracer
        self.pipelines = pipelines
        self._info_buf = ctypes.create_string_buffer(PROG_INFO_LEN)

    def collect(self):
        t = self.tracer
        if t is None:  # not started yet
            return
        for name, value in t.stats.as_dict().items():
            if name in GAUGES:
                yield GaugeMetricFamily(f"httptrace_{name}", name.replace("_", " "), value=value)
            else:
                yield CounterMetricFamily(f"httptrace_{name}", name.replace("_", " "),
                                          value=value)
        rb = t.rb
        avail = rb.available() if rb is not None else 0
        yield GaugeMetricFamily("httptrace_ring_buffer_bytes", "Bytes waiting in the ring buffer",
                                value=avail)
        yield GaugeMetricFamily("httptrace_ring_buffer_fill_ratio",
                                "Ring buffer fill (0..1)", value=avail / max(t.ring_bytes, 1))
        # adaptive sampling: kernel counts (as of the last housekeeping tick)
        k = getattr(t, "_kernel", {})
        for name in ("conns_sampled_out", "requests_sampled_out"):
            yield CounterMetricFamily(f"httptrace_{name}", name.replace("_", " ") + " (adaptive)",
                                      value=k.get(name, 0))
        ctl = getattr(t, "adaptive", None)
        yield GaugeMetricFamily("httptrace_adaptive_keep_ratio",
                                "Share of new connections traced (1: adaptive sampling off)",
                                value=ctl.keep if ctl else 1.0)
        yield CounterMetricFamily("httptrace_adaptive_sampling_engaged",
                                  "Times adaptive sampling engaged",
                                  value=ctl.engaged if ctl else 0)
        if self.pipelines:
            fams = {k: CounterMetricFamily(f"httptrace_{k}", k.replace("_", " "),
                                           labels=["exporter"])
                    for k in ("spans_exported", "spans_export_failed", "spans_export_dropped",
                              "export_batches", "export_retries")}
            queue = GaugeMetricFamily("httptrace_export_queue_spans", "Spans waiting to export",
                                      labels=["exporter"])
            for p in self.pipelines:
                c = p.counters()
                for k, fam in fams.items():
                    fam.add_metric([p.name], c[k])
                queue.add_metric([p.name], c["export_queue_len"])
            yield from fams.values()
            yield queue
        yield from self._bpf_stats()

    def _bpf_stats(self):
        """Per-program run time and count. The kernel counts them only while
        stats are on (the sysctl, or a BPF_ENABLE_STATS fd held by anyone,
        which the sysctl does not show), so: exported when on or ever counted."""
        obj = self.tracer.obj
        if obj is None:
            return
        from .. import loader

        lib = loader.libbpf()
        run_ns = CounterMetricFamily("httptrace_bpf_prog_run_seconds",
                                     "BPF program run time (kernel.bpf_stats_enabled=1)",
                                     labels=["program"])
        runs = CounterMetricFamily("httptrace_bpf_prog_runs", "BPF program runs",
                                   labels=["program"])
        buf = self._info_buf
        counted = False
        for prog in list(self.tracer.attached):
            ctypes.memset(buf, 0, PROG_INFO_LEN)
            n = ctypes.c_uint32(PROG_INFO_LEN)
            if lib.bpf_obj_get_info_by_fd(obj.prog_fd(prog), buf, ctypes.byref(n)) != 0:
                continue
            ns = int.from_bytes(buf.raw[PROG_INFO_RUN_TIME_NS:PROG_INFO_RUN_TIME_NS + 8], "little")
            cnt = int.from_bytes(buf.raw[PROG_INFO_RUN_CNT:PROG_INFO_RUN_CNT + 8], "little")
            run_ns.add_metric([prog], ns / 1e9)
            runs.add_metric([prog], cnt)
            counted = counted or cnt > 0
        if counted or bpf_stats_enabled():
            yield run_ns
            yield runs


def bpf_stats_enabled() -> bool:
    try:
        with open(BPF_STATS_SYSCTL) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


class MetricsServer:
    """`red` is the per-span sink (RED, span metrics, service graph)."""

    def __init__(self, host: str, port: int, tracer, pipelines: list,
                 resources: semconv.Resources, max_series: int = 1000, *,
                 span_metrics: bool = True, service_graph: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.graph = ServiceGraph(self.registry, max_series) if service_graph else None
        self.red = RedMetrics(self.registry, resources, max_series,
                              span_metrics=span_metrics, graph=self.graph)
        self.health = HealthCollector(tracer, pipelines)
        self.registry.register(self.health)
        ProcessCollector(registry=self.registry)  # the agent's CPU, RSS, fds
        self.host, self.port = host, port
        self._server = None
        self._thread = None

    def start(self) -> None:
        """OSError (address in use, permission) propagates: the CLI turns it into exit 2."""
        self._server, self._thread = start_http_server(self.port, self.host, self.registry)

    def respawn(self) -> None:
        """Serve from a new thread of the caller, on the same socket: credentials
        are per thread, and this one started before the privilege drop."""
        if self._server is None:
            return
        from tracer.privileges import join_task

        self._server.shutdown()
        join_task(self._thread)  # gone from the kernel too, with its old sets
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="metrics")
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
