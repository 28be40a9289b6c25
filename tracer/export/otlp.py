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

Transports (targets.OtlpOptions): plaintext or TLS by the target's scheme
(system CAs unless a CA file is given, optional client certificate), headers
on every request (gRPC metadata), gzip. TLS files are read when the exporter
is built, before the privilege drop. Credentials refused (HTTP 401/403, gRPC
UNAUTHENTICATED/PERMISSION_DENIED) and failed handshakes raise RefusedError
(not retried); messages never carry a header value.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import ssl

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from . import semconv
from .pipeline import ExportError, RefusedError, RetryableError
from .targets import OtlpOptions, TargetError, redact

log = logging.getLogger("tracer.export.otlp")

SCOPE_NAME = "httptrace-ebpf"
SCOPE_VERSION = "0.1.0"
GZIP_LEVEL = 6  # zlib's default, as the Go and Java exporters use; 9 costs more CPU per span

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


class _Transport:
    """What both transports share: the name (the target's label, no secret),
    the headers, TLS material read at start and messages with secrets redacted."""

    def __init__(self, name: str, encoder: Encoder | None, options: OtlpOptions | None,
                 timeout_s: float | None) -> None:
        self.name = name
        self.encoder = encoder or Encoder()
        self.options = options or OtlpOptions()
        self.timeout_s = timeout_s if timeout_s is not None else self.options.timeout_s
        self.headers = self.options.headers.items()
        self._secrets = self.options.headers.secrets()

    def redact(self, msg: str) -> str:
        return redact(msg, self._secrets)

    def _tls_context(self) -> ssl.SSLContext:
        """The CA bundle (default: the system's) and the client certificate,
        loaded now: before the privilege drop, and so that a bad file is a
        usage error at start (TargetError), not a failure at the first export."""
        o = self.options
        try:
            ctx = ssl.create_default_context(cafile=o.ca_file or None)
        except (OSError, ValueError) as e:
            raise TargetError(f"{self.name}: CA file {o.ca_file!r}: {_why(e)} "
                              "(--export-ca, OTEL_EXPORTER_OTLP_CERTIFICATE): give a PEM "
                              "bundle") from None
        if o.client_cert:
            try:
                ctx.load_cert_chain(o.client_cert, o.client_key)
            except (OSError, ValueError) as e:
                raise TargetError(f"{self.name}: client certificate {o.client_cert!r} or key "
                                  f"{o.client_key!r}: {_why(e)} (--export-client-cert/-key, "
                                  "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/_KEY): give a PEM "
                                  "certificate and its unencrypted key") from None
        return ctx

    def _refused_tls(self, cause: str) -> RefusedError:
        return RefusedError(self.redact(
            f"{self.name}: TLS handshake failed: {cause}: check the receiver's certificate "
            "against the CA (--export-ca, OTEL_EXPORTER_OTLP_CERTIFICATE; default: the "
            "system's), the client certificate if it asks for one, and the scheme "
            "(otlp-http:// and otlp-grpc:// are plaintext)"))

    def _refused_auth(self, cause: str) -> RefusedError:
        return RefusedError(self.redact(
            f"{self.name}: {cause}: the receiver refuses the credentials: check the export "
            "headers (--export-header, OTEL_EXPORTER_OTLP_[TRACES_]HEADERS)"))


def _why(e: Exception) -> str:
    if isinstance(e, ssl.SSLError):
        return e.reason or str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def _read(path: str, what: str, name: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TargetError(f"{name}: {what} {path!r}: {e.strerror or e}") from None


class GrpcExporter(_Transport):
    """OTLP/gRPC: TraceService/Export over one channel (TLS with `tls`)."""

    # OTLP spec: the codes after which the same request may succeed later
    _RETRYABLE = frozenset({"CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED",
                            "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"})
    _REFUSED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
    # how grpc-core reports a failed handshake inside UNAVAILABLE's details
    _TLS_FAILED = ("handshake failed", "CERTIFICATE_VERIFY_FAILED", "SSL_ERROR_SSL")

    def __init__(self, host: str, port: int, encoder: Encoder | None = None,
                 timeout_s: float | None = None, *, tls: bool = False,
                 options: OtlpOptions | None = None) -> None:
        # grpc-core logs a failed handshake itself (INFO, several lines): the
        # exporter says it once; a GRPC_VERBOSITY the user chose is kept
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"otlp-grpc{'s' if tls else ''}://{hostport}", encoder, options,
                         timeout_s)
        self._grpc = grpc
        self._target = hostport
        self._stubs = trace_service_pb2_grpc
        self._channel = self._stub = None
        self._metadata = self.headers or None
        self._compression = grpc.Compression.Gzip if self.options.compression == "gzip" \
            else None
        self._credentials = None
        if tls:
            self._tls_context()  # checks the files (one line at start)
            o = self.options
            roots = _read(o.ca_file, "CA file", self.name) if o.ca_file else _system_roots()
            key = cert = None
            if o.client_cert:
                cert = _read(o.client_cert, "client certificate", self.name)
                key = _read(o.client_key, "client key", self.name)
            self._credentials = grpc.ssl_channel_credentials(roots, key, cert)

    def _connect(self) -> None:
        """On the first export, i.e. on the sender thread: grpc starts its own
        threads with the channel, and they take the credentials of the thread
        that creates it, which (after attach) has dropped its capabilities."""
        # the pipeline retries; the channel must reconnect soon after an outage
        # (grpc's default backoff grows to 120 s)
        options = [
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if self._credentials is not None:
            self._channel = self._grpc.secure_channel(self._target, self._credentials, options,
                                                      compression=self._compression)
        else:
            self._channel = self._grpc.insecure_channel(self._target, options,
                                                        compression=self._compression)
        self._stub = self._stubs.TraceServiceStub(self._channel)

    def export(self, spans: list) -> int:
        req = self.encoder.request(spans)
        if self._stub is None:
            self._connect()
        try:
            resp = self._stub.Export(req, timeout=self.timeout_s, metadata=self._metadata)
        except self._grpc.RpcError as e:
            code = e.code()
            name = code.name if code is not None else "UNKNOWN"
            details = e.details() or ""
            if name in self._REFUSED:
                raise self._refused_auth(f"{name}: {details}") from None
            if name == "UNAVAILABLE" and any(s in details for s in self._TLS_FAILED):
                raise self._refused_tls(_tls_cause(details)) from None
            msg = self.redact(f"{self.name}: {name}: {details}")
            if name in self._RETRYABLE:
                raise RetryableError(msg) from None
            raise ExportError(msg) from None
        return _rejected(resp)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


def _system_roots() -> bytes | None:
    """The system's CA bundle (SSL_CERT_FILE honoured), which OpenSSL and so
    OTLP/HTTP use; None leaves grpc its own bundled roots."""
    path = ssl.get_default_verify_paths().cafile
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _tls_cause(details: str) -> str:
    """grpc-core's long 'failed to connect to all addresses; last error: ...
    Ssl handshake failed (TSI_...): SSL_ERROR_SSL: error:...:OPENSSL_internal:CAUSE: OK'
    -> 'CAUSE'."""
    tail = details.rpartition("handshake failed")[2] or details
    tail = tail.rpartition("OPENSSL_internal:")[2] or tail
    return tail.removesuffix(": OK").strip(" :") or "handshake failed"


class HttpExporter(_Transport):
    """OTLP/HTTP with binary protobuf, over one keep-alive http.client connection
    (HTTPS with `tls`)."""

    def __init__(self, host: str, port: int, path: str = "/v1/traces",
                 encoder: Encoder | None = None, timeout_s: float | None = None, *,
                 tls: bool = False, options: OtlpOptions | None = None) -> None:
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"otlp-http{'s' if tls else ''}://{hostport}{path}", encoder, options,
                         timeout_s)
        # getaddrinfo and SNI encode host names with this codec: import it
        # before the privilege drop, after which the stdlib may be unreadable
        import encodings.idna  # noqa: F401

        self.host, self.port, self.path = host, port, path
        self._ssl = self._tls_context() if tls else None
        self._gzip = self.options.compression == "gzip"
        base = {"content-type": "application/x-protobuf", "user-agent": SCOPE_NAME}
        if self._gzip:
            base["content-encoding"] = "gzip"
        self._headers = {**base, **dict(self.headers)}
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._ssl is not None:
                self._conn = http.client.HTTPSConnection(self.host, self.port,
                                                         timeout=self.timeout_s,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout_s)
        return self._conn

    def export(self, spans: list) -> int:
        body = self.encoder.request(spans).SerializeToString()
        if self._gzip:
            body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        conn = self._connection()
        try:
            conn.request("POST", self.path, body=body, headers=self._headers)
            resp = conn.getresponse()
            data = resp.read()
        except ssl.SSLCertVerificationError as e:
            self._reset()
            raise self._refused_tls(e.verify_message or e.reason or str(e)) from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:
            self._reset()  # closed mid-stream: like a reset, try again
            raise RetryableError(self.redact(f"{self.name}: {e}")) from None
        except ssl.SSLError as e:  # alerts (a client certificate wanted), a plaintext peer
            self._reset()
            raise self._refused_tls(e.reason or str(e)) from None
        except (OSError, http.client.HTTPException) as e:
            self._reset()  # refused, reset, timed out: a fresh connection next time
            raise RetryableError(self.redact(f"{self.name}: {e}")) from None
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
        if status in (401, 403):
            raise self._refused_auth(f"HTTP {status} {resp.reason}".rstrip())
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
    """TargetError (one line) for TLS files that cannot be loaded."""
    encoder = Encoder(resources)
    if target.kind == "otlp-grpc":
        return GrpcExporter(target.host, target.port, encoder, tls=target.tls,
                            options=target.options)
    if target.kind == "otlp-http":
        return HttpExporter(target.host, target.port, target.path, encoder, tls=target.tls,
                            options=target.options)
    raise ValueError(f"not an OTLP target: {target.kind}")
