"""OTLP traces: spans -> ExportTraceServiceRequest, sent over gRPC or HTTP/protobuf.

Imported only when an otlp-* export is configured: protobuf and (for gRPC)
grpcio cost 5 and 20 MB of RSS, which the plain JSONL path must not pay.
Encoding runs on the pipeline's sender thread, never on the ring-buffer consumer.

Mapping (OTel semantic conventions):
- resource per traced process: service.name, process.pid,
  process.executable.name, host.name, container.id (see semconv.Resources);
- span: ids from the span, kind SERVER/CLIENT, name '{method} {route}' (HTTP)
  or '{service}/{method}' (gRPC), the span's semconv attributes plus
  network.peer.*, thread.id; status ERROR (with error.type) for HTTP server
  5xx, client 4xx/5xx, gRPC codes as semconv says, else UNSET.
"""

from __future__ import annotations

import http.client
import logging

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from . import semconv
from .pipeline import ExportError, RetryableError

log = logging.getLogger("tracer.export.otlp")

SCOPE_NAME = "httptrace-ebpf"
SCOPE_VERSION = "0.1.0"
TIMEOUT_S = 10.0

_KIND = {"server": trace_pb2.Span.SPAN_KIND_SERVER, "client": trace_pb2.Span.SPAN_KIND_CLIENT}
_STATUS_ERROR = trace_pb2.Status.STATUS_CODE_ERROR


def _set_value(v: common_pb2.AnyValue, value) -> None:
    if isinstance(value, bool):  # before int: bool is an int
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    else:
        v.string_value = str(value)


def _add_attributes(repeated, attrs: dict) -> None:
    for k, value in attrs.items():
        kv = repeated.add()
        kv.key = k
        _set_value(kv.value, value)


class Encoder:
    """Spans -> ExportTraceServiceRequest, one ResourceSpans per traced process."""

    def __init__(self, resources: semconv.Resources | None = None) -> None:
        self.resources = resources or semconv.Resources()
        self.route = semconv.RouteCache()

    def request(self, spans: list) -> trace_service_pb2.ExportTraceServiceRequest:
        req = trace_service_pb2.ExportTraceServiceRequest()
        by_proc: dict[tuple[int, str], trace_pb2.ScopeSpans] = {}
        for span in spans:
            key = (span.pid, span.comm)
            scope = by_proc.get(key)
            if scope is None:
                rs = req.resource_spans.add()
                _add_attributes(rs.resource.attributes, self.resources.of(span.pid, span.comm))
                scope = rs.scope_spans.add()
                scope.scope.name = SCOPE_NAME
                scope.scope.version = SCOPE_VERSION
                by_proc[key] = scope
            self.fill(scope.spans.add(), span)
        return req

    def fill(self, out: trace_pb2.Span, span) -> None:
        out.trace_id = bytes.fromhex(span.trace_id)
        out.span_id = bytes.fromhex(span.span_id)
        if span.parent_span_id:
            out.parent_span_id = bytes.fromhex(span.parent_span_id)
        out.name = semconv.span_name(span, self.route)
        out.kind = _KIND.get(span.kind, trace_pb2.Span.SPAN_KIND_INTERNAL)
        start = span.start_time_unix_nano
        out.start_time_unix_nano = start
        out.end_time_unix_nano = start + span.duration_ns
        attrs = span.attributes()
        _add_attributes(out.attributes, attrs)
        _add_attributes(out.attributes, semconv.extra_attributes(span))
        if semconv.is_error(span, attrs):
            out.status.code = _STATUS_ERROR
            kv = out.attributes.add()
            kv.key = "error.type"
            kv.value.string_value = semconv.error_type(span, attrs)


def _rejected(resp) -> int:
    if resp.HasField("partial_success"):
        ps = resp.partial_success
        if ps.rejected_spans or ps.error_message:
            log.warning("receiver rejected %d spans: %s", ps.rejected_spans, ps.error_message)
        return ps.rejected_spans
    return 0


class GrpcExporter:
    """OTLP/gRPC: TraceService/Export over one insecure channel."""

    # OTLP spec: the codes after which the same request may succeed later
    _RETRYABLE = frozenset({"CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED",
                            "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"})

    def __init__(self, host: str, port: int, encoder: Encoder | None = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self._grpc = grpc
        self.name = f"otlp-grpc://{host}:{port}"
        self.encoder = encoder or Encoder()
        self.timeout_s = timeout_s
        self._target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._stubs = trace_service_pb2_grpc
        self._channel = self._stub = None

    def _connect(self) -> None:
        """On the first export, i.e. on the sender thread: grpc starts its own
        threads with the channel, and they take the credentials of the thread
        that creates it, which (after attach) has dropped its capabilities."""
        # the pipeline retries; the channel must reconnect soon after an outage
        # (grpc's default backoff grows to 120 s)
        self._channel = self._grpc.insecure_channel(self._target, options=[
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ])
        self._stub = self._stubs.TraceServiceStub(self._channel)

    def export(self, spans: list) -> int:
        req = self.encoder.request(spans)
        if self._stub is None:
            self._connect()
        try:
            resp = self._stub.Export(req, timeout=self.timeout_s)
        except self._grpc.RpcError as e:
            code = e.code()
            name = code.name if code is not None else "UNKNOWN"
            msg = f"{self.name}: {name}: {e.details()}"
            if name in self._RETRYABLE:
                raise RetryableError(msg) from None
            raise ExportError(msg) from None
        return _rejected(resp)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


class HttpExporter:
    """OTLP/HTTP with binary protobuf, over one keep-alive http.client connection."""

    def __init__(self, host: str, port: int, path: str = "/v1/traces",
                 encoder: Encoder | None = None, timeout_s: float = TIMEOUT_S) -> None:
        self.host, self.port, self.path = host, port, path
        self.name = f"otlp-http://{host}:{port}{path}"
        self.encoder = encoder or Encoder()
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def export(self, spans: list) -> int:
        body = self.encoder.request(spans).SerializeToString()
        conn = self._connection()
        try:
            conn.request("POST", self.path, body=body, headers={
                "Content-Type": "application/x-protobuf", "User-Agent": SCOPE_NAME})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self._reset()  # refused, reset, timed out: a fresh connection next time
            raise RetryableError(f"{self.name}: {e}") from None
        status = resp.status
        if resp.will_close:
            self._reset()
        if 200 <= status < 300:
            out = trace_service_pb2.ExportTraceServiceResponse()
            try:
                out.ParseFromString(data)
            except DecodeError:
                return 0  # an empty or non-protobuf 2xx body still means accepted
            return _rejected(out)
        msg = f"{self.name}: HTTP {status}"
        # OTLP/HTTP: 429, 502, 503, 504 are retryable; other 5xx too (transient
        # in practice), except 501 which will not change
        if status == 429 or (status >= 500 and status != 501):
            raise RetryableError(msg, retry_after=_retry_after(resp.getheader("Retry-After")))
        raise ExportError(msg)

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._reset()


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def make_exporter(target, resources: semconv.Resources):
    encoder = Encoder(resources)
    if target.kind == "otlp-grpc":
        return GrpcExporter(target.host, target.port, encoder)
    if target.kind == "otlp-http":
        return HttpExporter(target.host, target.port, target.path, encoder)
    raise ValueError(f"not an OTLP target: {target.kind}")
