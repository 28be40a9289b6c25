"""`--metrics HOST:PORT`: Prometheus /metrics from a dedicated registry.

RED metrics, observed on the agent thread per span (a few dict lookups and
three locked increments; the label children are cached):
    httptrace_requests_total{service,kind,method,route}
    httptrace_request_errors_total{service,kind,method,route}
    httptrace_request_duration_seconds{service,kind,method,route}  (histogram)
`route` is the path with ids templated (/item/123 -> /item/{id}); at most
`max_series` label sets exist, later ones share route="{other}" and are
counted in httptrace_route_overflow_total. Errors follow the span status
(semconv.is_error).

Tracer health is read at scrape time (HealthCollector): every Stats counter as
httptrace_<name>_total, ring-buffer fill, exporter counters per exporter, and
per-program BPF run time while BPF stats are on.
"""

from __future__ import annotations

import ctypes
import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import start_http_server

from . import semconv

log = logging.getLogger("tracer.export.prometheus")

# OTel's advisory buckets for http.server.request.duration (seconds)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0)
LABELS = ("service", "kind", "method", "route")
OTHER_ROUTE = "{other}"
GAUGES = frozenset({"connections_open"})

BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
# struct bpf_prog_info (uapi/linux/bpf.h): byte offsets of the fields read here,
# checked against the kernel's BTF by tests/unit/test_export_prometheus.py
PROG_INFO_RUN_TIME_NS = 192
PROG_INFO_RUN_CNT = 200
PROG_INFO_LEN = 208


class RedMetrics:
    """Requests, errors and durations per service/kind/method/route."""

    def __init__(self, registry: CollectorRegistry, resources: semconv.Resources,
                 max_series: int = 1000) -> None:
        self.resources = resources
        self.route = semconv.RouteCache()
        self.max_series = max_series
        self.requests = Counter("httptrace_requests", "Requests traced (spans)", LABELS,
                                registry=registry)
        self.errors = Counter("httptrace_request_errors",
                              "Requests whose span status is ERROR (server 5xx, client "
                              "4xx/5xx, gRPC error codes)", LABELS, registry=registry)
        self.duration = Histogram("httptrace_request_duration_seconds",
                                  "Request duration (span duration) in seconds", LABELS,
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.overflow = Counter("httptrace_route_overflow",
                                "Requests counted under route=\"{other}\": too many label sets",
                                registry=registry)
        self._children: dict[tuple, tuple] = {}  # raw span key -> label children
        self._seen: set[tuple] = set()  # label sets in use

    def __call__(self, span) -> None:
        key = (span.pid, span.comm, span.kind, span.method, span.path)
        kids = self._children.get(key)
        if kids is None:
            kids = self._resolve(span, key)
        req, err, dur, over = kids
        req.inc()
        dur.observe(span.duration_ns / 1e9)
        if semconv.is_error(span, span.attributes() if semconv.is_rpc(span) else {}):
            err.inc()
        if over:
            self.overflow.inc()

    def _resolve(self, span, key: tuple) -> tuple:
        labels = (self.resources.service(span.pid, span.comm), span.kind,
                  semconv.method(span), self.route(span.path))
        over = False
        if labels not in self._seen:
            if len(self._seen) >= self.max_series:
                labels = labels[:3] + (OTHER_ROUTE,)
                over = True
            self._seen.add(labels)
        kids = (self.requests.labels(*labels), self.errors.labels(*labels),
                self.duration.labels(*labels), over)
        if len(self._children) >= 8 * self.max_series:  # raw (pid, path) keys: bound them
            self._children.clear()
        self._children[key] = kids
        return kids


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
    def __init__(self, host: str, port: int, tracer, pipelines: list,
                 resources: semconv.Resources, max_series: int = 1000) -> None:
        self.registry = CollectorRegistry()
        self.red = RedMetrics(self.registry, resources, max_series)
        self.health = HealthCollector(tracer, pipelines)
        self.registry.register(self.health)
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
