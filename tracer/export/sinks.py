"""The exporters of one `tracer run`: built from the parsed targets, fed by a
fan-out sink, closed at exit with their counters merged into the summary.

    exports = Exports(targets, metrics_addr, service_names)   # OSError: cannot open/bind
    tracer = Tracer(filters, sink=exports.sink(writer))
    exports.start(tracer)
    ...
    exports.stop_metrics(); tracer.stop(); exports.close()
    summary.update(exports.summary())

Each exporter module is imported only when its target is configured, so the
JSONL-only path imports none of protobuf, grpcio or prometheus-client.
"""

from __future__ import annotations

from collections.abc import Callable

from .pipeline import ExportPipeline
from .semconv import Resources
from .targets import ExportTarget

# The OpenTelemetry SDK's batch span processor settings, honoured as the SDK does
# (name -> pipeline option, scale from the variable's unit)
BSP_ENV = {
    "OTEL_BSP_MAX_QUEUE_SIZE": ("queue_size", 1),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("batch_size", 1),
    "OTEL_BSP_SCHEDULE_DELAY": ("interval_s", 1e-3),  # ms
    "OTEL_BSP_EXPORT_TIMEOUT": ("max_retry_s", 1e-3),  # ms
}


def pipeline_options(environ) -> dict:
    """Pipeline settings from OTEL_BSP_* variables; a bad value is a ValueError
    naming the variable."""
    opts = {}
    for var, (opt, scale) in BSP_ENV.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        if not raw.isdigit() or int(raw) <= 0:
            raise ValueError(f"{var}={raw!r}: expected a positive integer")
        opts[opt] = int(raw) * scale if scale != 1 else int(raw)
    return opts


SUMMED = ("spans_exported", "spans_export_failed", "spans_export_dropped", "export_batches",
          "export_retries")


class Exports:
    def __init__(self, targets: list[ExportTarget], metrics: tuple[str, int] | None = None,
                 service_names: dict[str, str] | None = None, *,
                 pipeline_opts: dict | None = None) -> None:
        self.resources = Resources(service_names)
        self.pipelines: list[ExportPipeline] = []
        self.metrics = None
        opts = pipeline_opts or {}
        try:
            for t in targets:
                self.pipelines.append(ExportPipeline(self._exporter(t), name=t.label, **opts))
            if metrics is not None:
                from .prometheus import MetricsServer

                self.metrics = MetricsServer(metrics[0], metrics[1], None, self.pipelines,
                                             self.resources)
                self.metrics.start()
        except BaseException:
            self.close(timeout=0)
            raise

    def _exporter(self, t: ExportTarget):
        if t.kind == "jaeger-json":
            from .jaeger import JaegerJsonExporter

            return JaegerJsonExporter(t.path, self.resources)
        from .otlp import make_exporter

        return make_exporter(t, self.resources)

    @property
    def active(self) -> bool:
        return bool(self.pipelines or self.metrics)

    def sink(self, writer: Callable) -> Callable:
        """writer(span) as before, then every exporter; the writer alone when none."""
        subs = tuple(p.submit for p in self.pipelines)
        if self.metrics is not None:
            subs += (self.metrics.red,)
        if not subs:
            return writer
        if len(subs) == 1:
            only = subs[0]

            def sink(span) -> None:
                writer(span)
                only(span)
        else:
            def sink(span) -> None:
                writer(span)
                for s in subs:
                    s(span)
        return sink

    def start(self, tracer) -> None:
        if self.metrics is not None:
            self.metrics.health.tracer = tracer
        for p in self.pipelines:
            p.start()

    def stop_metrics(self) -> None:
        """Before the tracer closes its BPF object: a scrape reads its program fds."""
        if self.metrics is not None:
            self.metrics.stop()

    def close(self, timeout: float = 5.0) -> None:
        self.stop_metrics()
        for p in self.pipelines:
            p.close(timeout)

    def summary(self) -> dict:
        if not self.pipelines:
            return {}
        per = {p.name: p.counters() for p in self.pipelines}
        out = {k: sum(c[k] for c in per.values()) for k in SUMMED}
        out["exporters"] = per
        return out
