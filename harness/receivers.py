"""Real OTLP receivers (for tests, and for `harness bench --export`): a gRPC
TraceService and an OTLP/HTTP endpoint, both decoding with the official
opentelemetry-proto messages.

    with GrpcReceiver() as rx:          # 127.0.0.1, a free port
        ... export to f"otlp-grpc://127.0.0.1:{rx.port}" ...
        rx.wait_spans(23)
    rx.spans()  -> [(resource_attrs: dict, span: trace_pb2.Span), ...]

stop()/start() again on the same port simulates an outage.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)


def attrs(kvs) -> dict:
    """KeyValue list -> plain dict with Python values."""
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


class _Store:
    """keep=False only counts spans (a long benchmark must not hoard them)."""

    def __init__(self, keep: bool = True) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.keep = keep
        self.count = 0
        self.cond = threading.Condition()

    def add(self, req) -> None:
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with self.cond:
            self.count += n
            if self.keep:
                self.requests.append(req)
            self.cond.notify_all()

    def spans(self) -> list:
        with self.cond:
            reqs = list(self.requests)
        return [(attrs(rs.resource.attributes), span)
                for req in reqs for rs in req.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def wait_spans(self, n: int, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(len(ss.spans) for r in self.requests for rs in r.resource_spans
                      for ss in rs.scope_spans) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
        return self.spans()


class GrpcReceiver(_Store, trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, port: int = 0, keep: bool = True) -> None:
        super().__init__(keep)
        self.port = port
        self._server: grpc.Server | None = None

    def Export(self, request, context):  # noqa: N802 - the gRPC method name
        self.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> GrpcReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self) -> GrpcReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class HttpReceiver(_Store):
    """POST /v1/traces with application/x-protobuf; `status` forces a reply code."""

    def __init__(self, port: int = 0, path: str = "/v1/traces", keep: bool = True) -> None:
        super().__init__(keep)
        self.port = port
        self.path = path
        self.status = 200
        self.posts = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> HttpReceiver:
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                rx.posts += 1
                if self.path != rx.path or \
                        self.headers.get("content-type") != "application/x-protobuf":
                    code, out = 404, b""
                elif rx.status != 200:
                    code, out = rx.status, b""
                else:
                    req = trace_service_pb2.ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    rx.add(req)
                    code = 200
                    out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(code)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        srv = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        srv.daemon_threads = True
        self.port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self._server = srv
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
