"""TLS plaintext end to end (issue 8): real tracer CLI, real TLS servers and
clients, count-exact.

- Python's ssl (system libssl.so.3, socket BIO) server, `requests` and
  `curl -k` clients: 23 requests, 23 server + 23 client spans, tls true.
- Node.js (OpenSSL linked into the node binary, memory BIOs), started after
  the tracer: found through its exec and a symbol search.
- gRPC over TLS (ALPN h2): a Node http2 server, curl as the gRPC client
  (23 + 23 spans), and a grpcio client (23 server spans: grpcio's BoringSSL
  has hidden symbols and cannot be hooked).
- grpcio at both ends: nothing to hook; the ciphertext is recognised and
  skipped, never parsed into garbage.

Every test checks that no ciphertext reached a parser: unparsed_connections
and unparsed_bytes are 0, and the skipped-ciphertext counter is positive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.tracing import TracerRun, free_port, server
from tests.kernel.conftest import require

N = 23
SERVERS = Path(__file__).parent / "servers"
STATUS = {"ok": 200, "missing": 404, "fail": 500}


@pytest.fixture(autouse=True)
def _needs_kernel():
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")



def _no_ciphertext_parsed(s: dict) -> None:
    assert s["unparsed_connections"] == 0, s
    assert s["unparsed_bytes"] == 0, s
    assert s["tls_skipped_bytes"] > 0, s
    assert s["tls_no_fd"] == 0, s
    assert s["events_dropped"] == 0, s


def _check(spans, expected, protocol="http1"):
    assert [(s["method"], s["path"], s["status"]) for s in spans] == expected
    assert all(s["tls"] is True and s["protocol"] == protocol for s in spans), spans


def test_python_https_server_requests_and_curl_23_exact(tmp_path, cert):
    port = free_port()
    expected = []
    for i in range(N):
        kind = ("ok", "ok", "missing", "ok", "fail")[i % 5]
        expected.append(("POST" if i < 12 and i % 3 == 1 else "GET", f"/{kind}/{i}",
                         STATUS[kind]))
    # the tracer first: the server is a process started after it
    with TracerRun(tmp_path, "--port", str(port)) as tr, \
            server([sys.executable, str(SERVERS / "tls_server.py"), str(port), "5",
                    *cert]) as srv:
        session = requests.Session()  # 12 on one keep-alive connection
        for method, path, status in expected[:12]:
            r = session.request(method, f"https://127.0.0.1:{port}{path}", verify=cert[0],
                                data=b"body" if method == "POST" else None)
            assert r.status_code == status
        session.close()
        # 11 more from curl, one connection (curl links libssl too)
        urls = [f"https://127.0.0.1:{port}{p}" for _, p, _ in expected[12:]]
        subprocess.run(["curl", "-sk", *urls, *["-o", "/dev/null"] * len(urls)], check=True,
                       timeout=30)
        time.sleep(0.5)
    s = tr.summary
    _check(tr.by("server", srv.pid), expected)
    clients = tr.by("client")
    _check(clients, expected)
    assert [c["pid"] for c in clients[:12]] == [os.getpid()] * 12
    assert {c["comm"] for c in clients[12:]} == {"curl"}
    _no_ciphertext_parsed(s)
    assert any("libssl.so" in lib for lib in s["tls_libraries"]), s


@pytest.fixture
def node():
    path = shutil.which("node")
    if not path:
        pytest.skip("node is not installed")
    return path


def _wait_exec_scan() -> None:
    """A new process's exec is looked at on the tracer's next housekeeping
    tick (1 s); the attach shows nowhere but in the summary, so allow 3 s."""
    time.sleep(3.0)


def test_node_https_started_after_tracer_is_found_by_exec(tmp_path, cert, node):
    port = free_port()
    expected = [("GET", f"/ok/{i}", 200) if i % 4 else ("GET", f"/missing/{i}", 404)
                for i in range(N)]
    with TracerRun(tmp_path, "--port", str(port)) as tr, \
            server([node, str(SERVERS / "tls_servers.js"), "https", str(port), *cert]) as srv:
        _wait_exec_scan()
        urls = [f"https://127.0.0.1:{port}{p}" for _, p, _ in expected]
        subprocess.run(["curl", "-sk", *urls, *["-o", "/dev/null"] * len(urls)], check=True,
                       timeout=30)
        time.sleep(0.5)
    s = tr.summary
    assert os.path.realpath(node) in s["tls_libraries"], s
    _check(tr.by("server", srv.pid), expected)
    _check(tr.by("client"), expected)
    _no_ciphertext_parsed(s)
    assert s["tls_hello"] >= 1, s  # node's connection: marked by its ClientHello


def _grpc_frame(n: int) -> bytes:
    """A length-prefixed echo.Msg{n, text}: protobuf by hand (field 1 varint,
    field 2 string)."""
    text = b"hi-%d" % n
    msg = bytes([0x08, n, 0x12, len(text)]) + text
    return b"\0" + len(msg).to_bytes(4, "big") + msg


def test_grpc_over_tls_h2_23_exact(tmp_path, cert, node):
    port = free_port()
    req = tmp_path / "req.bin"
    req.write_bytes(_grpc_frame(7))
    path = "/echo.Echo/Say"
    with TracerRun(tmp_path, "--port", str(port)) as tr, \
            server([node, str(SERVERS / "tls_servers.js"), "grpc", str(port), *cert]) as srv:
        _wait_exec_scan()
        # 23 unary calls on one HTTP/2 connection, ALPN h2
        out = subprocess.run(["curl", "-sk", "--http2", "-w", "%{http_version} %{http_code}\\n",
                              "-H", "content-type: application/grpc", "-H", "te: trailers",
                              "--data-binary", f"@{req}",
                              *[f"https://127.0.0.1:{port}{path}"] * N,
                              *["-o", "/dev/null"] * N],
                             check=True, capture_output=True, text=True, timeout=30).stdout
        assert out.split("\n")[:N] == ["2 200"] * N
        time.sleep(0.5)
    s = tr.summary
    expected = [("POST", path, 200)] * N
    server_spans = tr.by("server", srv.pid)
    _check(server_spans, expected, "grpc")
    _check(tr.by("client"), expected, "grpc")
    assert all(sp["attributes"]["rpc.grpc.status_code"] == 0 for sp in server_spans)
    _no_ciphertext_parsed(s)


def _echo_stubs(tmp_path):
    from tests.e2e.grpc_echo import stubs

    stub_dir = tmp_path / "stubs"
    stub_dir.mkdir()
    stubs.generate(stub_dir)
    sys.path.insert(0, str(stub_dir))
    try:
        import echo_pb2
        import echo_pb2_grpc
    finally:
        sys.path.remove(str(stub_dir))
    return echo_pb2, echo_pb2_grpc


def test_grpcio_client_to_node_grpc_tls_server_23_server_spans(tmp_path, cert, node):
    """A real gRPC client stack over TLS: grpcio's side is BoringSSL (not
    hookable), the server's is node's OpenSSL: exactly the 23 server spans."""
    grpc = pytest.importorskip("grpc")
    echo_pb2, echo_pb2_grpc = _echo_stubs(tmp_path)
    port = free_port()
    crt = Path(cert[0]).read_bytes()
    with TracerRun(tmp_path, "--port", str(port)) as tr, \
            server([node, str(SERVERS / "tls_servers.js"), "grpc", str(port), *cert]) as srv:
        _wait_exec_scan()
        creds = grpc.ssl_channel_credentials(root_certificates=crt)
        with grpc.secure_channel(f"127.0.0.1:{port}", creds,
                                 (("grpc.ssl_target_name_override", "localhost"),)) as ch:
            say = echo_pb2_grpc.EchoStub(ch).Say
            for i in range(N):
                assert say(echo_pb2.Msg(n=i, text="x")).n == i
        time.sleep(0.5)
    s = tr.summary
    spans = tr.by("server", srv.pid)
    _check(spans, [("POST", "/e2e.Echo/Say", 200)] * N, "grpc")
    assert all(sp["attributes"]["rpc.grpc.status_code"] == 0 for sp in spans)
    assert tr.by("client") == []  # BoringSSL: skipped, never parsed
    _no_ciphertext_parsed(s)
    assert s["tls_hello"] >= 2, s  # the client's side, and node's (memory BIO)


def test_grpcio_tls_boringssl_is_skipped_not_parsed(tmp_path, cert):
    """grpcio links BoringSSL statically with hidden symbols and no symbol
    table: nothing to attach to. The connection is recognised by its
    ClientHello and its bytes are counted as skipped, never parsed."""
    grpc = pytest.importorskip("grpc")
    echo_pb2, echo_pb2_grpc = _echo_stubs(tmp_path)
    from concurrent import futures

    class Echo(echo_pb2_grpc.EchoServicer):
        def Say(self, request, context):  # noqa: N802 (generated name)
            return echo_pb2.Msg(n=request.n, text=request.text)

    port = free_port()
    key, crt = Path(cert[1]).read_bytes(), Path(cert[0]).read_bytes()
    with TracerRun(tmp_path, "--port", str(port)) as tr:
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        echo_pb2_grpc.add_EchoServicer_to_server(Echo(), srv)
        srv.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, crt)]))
        srv.start()
        try:
            creds = grpc.ssl_channel_credentials(root_certificates=crt)
            opts = (("grpc.ssl_target_name_override", "localhost"),)
            with grpc.secure_channel(f"127.0.0.1:{port}", creds, opts) as ch:
                say = echo_pb2_grpc.EchoStub(ch).Say
                for i in range(N):
                    assert say(echo_pb2.Msg(n=i, text="x")).n == i
        finally:
            srv.stop(None)
    s = tr.summary
    assert tr.spans == []
    assert s["tls_hello"] == 2, s  # both ends of the one connection
    assert s["unparsed_connections"] == 0 and s["unparsed_bytes"] == 0, s
    assert s["tls_skipped_bytes"] > 0, s
