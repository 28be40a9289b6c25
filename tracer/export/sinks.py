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
from urllib.parse import unquote

from . import semconv
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


def resource_options(environ) -> tuple[str, dict[str, str]]:
    """(OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES as a dict): 'k1=v1,k2=v2',
    percent-decoded. A malformed entry is a ValueError naming the variable."""
    attrs = {}
    raw = environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    for i, item in enumerate(raw.split(","), 1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = unquote(key).strip(), unquote(value).strip()
        if not sep or not key:
            raise ValueError(f"OTEL_RESOURCE_ATTRIBUTES: entry {i} is not KEY=VALUE")
        attrs[key] = value
    return environ.get("OTEL_SERVICE_NAME", "").strip(), attrs


class EnvResources(Resources):
    """Resources with the OTel environment: service.name is the --service-name
    mapping, else OTEL_SERVICE_NAME, else service.name of
    OTEL_RESOURCE_ATTRIBUTES, else the comm; the other attributes of
    OTEL_RESOURCE_ATTRIBUTES are added to every process's resource, except
    where the tracer measured the value (process.*, container.id); host.name
    from the environment replaces the detected one."""

    def __init__(self, names: dict[str, str] | None, service: str, attrs: dict[str, str],
                 host: str | None = None) -> None:
        attrs = dict(attrs)
        self.default_service = service or attrs.pop("service.name", "")
        attrs.pop("service.name", None)
        env_host = attrs.pop("host.name", None)
        super().__init__(names, host=env_host if env_host is not None else host)
        self.attrs = attrs

    def _build(self, pid: int, comm: str) -> dict:
        res = super()._build(pid, comm)
        if self.default_service and comm not in self.names \
                and not (self.names and semconv.exe_name(pid) in self.names):
            res["service.name"] = self.default_service
        for k, v in self.attrs.items():
            res.setdefault(k, v)
        return res


SUMMED = ("spans_exported", "spans_export_failed", "spans_export_dropped", "export_batches",
          "export_batches_refused", "export_retries")


class Exports:
    def __init__(self, targets: list[ExportTarget], metrics: tuple[str, int] | None = None,
                 service_names: dict[str, str] | None = None, *,
                 pipeline_opts: dict | None = None,
                 resource: tuple[str, dict[str, str]] | None = None) -> None:
        """resource: (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), see resource_options.
        OSError: a file or port cannot be opened; TargetError: TLS files."""
        if resource is not None and (resource[0] or resource[1]):
            self.resources = EnvResources(service_names, *resource)
        else:
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
