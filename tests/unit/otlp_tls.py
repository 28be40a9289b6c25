"""A test PKI (made with the openssl command) and OTLP receivers that demand
TLS and an auth header, like a managed backend: OTLP/HTTP on an HTTPS server
(401 without the right `authorization`), OTLP/gRPC on a grpc server with
ssl_server_credentials (UNAUTHENTICATED without it). Either can also demand
a client certificate signed by the test CA (mTLS).

    pki = make_pki(tmp_path)
    with TlsHttpReceiver(pki, token="Bearer s3cret") as rx:
        ... export to f"otlp-https://127.0.0.1:{rx.port}" with --export-ca pki.ca ...
    rx.spans(), rx.refused, rx.encodings
"""

from __future__ import annotations

import gzip
import shutil
import ssl
import subprocess
import threading
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from harness.receivers import _Store

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    ca: str  # the test CA (PEM)
    server_cert: str  # localhost and 127.0.0.1, signed by the CA
    server_key: str
    client_cert: str  # signed by the CA, for mTLS
    client_key: str
    other_ca: str  # a CA that signed nothing here: verification against it fails


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", *EC, "-days", "1", "-keyout", f"{name}.key", "-out",
             f"{name}.pem", "-subj", f"/CN={name}", "-addext",
             "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
             cwd=d)


def _leaf(d: Path, name: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl("req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
             f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
             cwd=d)


def make_pki(d: Path) -> Pki:
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca")
    _ca(d, "other")
    _leaf(d, "server", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                       "extendedKeyUsage=serverAuth\n")
    _leaf(d, "client", "extendedKeyUsage=clientAuth\n")
    for f in d.glob("*.key"):  # the tracer may read them after dropping to --user
        f.chmod(0o644)
    return Pki(str(d / "ca.pem"), str(d / "server.pem"), str(d / "server.key"),
               str(d / "client.pem"), str(d / "client.key"), str(d / "other.pem"))


class TlsHttpReceiver(_Store):
    """OTLP/HTTP over HTTPS; `token` is the `authorization` value it accepts
    (else 401, counted in `refused`); gzip bodies are decoded (`encodings`
    lists each accepted POST's content-encoding)."""

    def __init__(self, pki: Pki, token: str, *, mtls: bool = False,
                 path: str = "/v1/traces") -> None:
        super().__init__()
        self.pki, self.token, self.mtls, self.path = pki, token, mtls, path
        self.port = 0
        self.refused = 0
        self.encodings: list[str] = []
        self.headers: list[dict] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> TlsHttpReceiver:
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                rx.headers.append({k.lower(): v for k, v in self.headers.items()})
                out = b""
                if self.headers.get("authorization") != rx.token:
                    rx.refused += 1
                    code = 401
                elif self.path != rx.path or \
                        self.headers.get("content-type") != "application/x-protobuf":
                    code = 404
                else:
                    enc = self.headers.get("content-encoding", "")
                    rx.encodings.append(enc)
                    if enc == "gzip":
                        body = gzip.decompress(body)
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

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        if self.mtls:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.pki.ca)
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        self.port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self._server = srv
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TlsHttpReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class TlsGrpcReceiver(_Store, trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC over TLS; a call without `authorization: token` metadata is
    aborted with UNAUTHENTICATED (counted in `refused`)."""

    def __init__(self, pki: Pki, token: str, *, mtls: bool = False) -> None:
        super().__init__()
        self.pki, self.token, self.mtls = pki, token, mtls
        self.port = 0
        self.refused = 0
        self.metadata: list[dict] = []
        self._server: grpc.Server | None = None

    def Export(self, request, context):  # noqa: N802 - the gRPC method name
        md = dict(context.invocation_metadata())
        self.metadata.append(md)
        if md.get("authorization") != self.token:
            with self.cond:
                self.refused += 1
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")
        self.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> TlsGrpcReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        p = self.pki
        creds = grpc.ssl_server_credentials(
            [(Path(p.server_key).read_bytes(), Path(p.server_cert).read_bytes())],
            root_certificates=Path(p.ca).read_bytes() if self.mtls else None,
            require_client_auth=self.mtls)
        self.port = server.add_secure_port("127.0.0.1:0", creds)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self) -> TlsGrpcReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
