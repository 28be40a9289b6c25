"""HTTP/1.x spans end to end: real tracer CLI, real servers, real clients.

Count-exact: 23 requests give exactly 23 server spans and 23 client spans with
the right method, path and status; durations cover the server's sleep.
"""

import os
import shutil
import socket
import subprocess

import pytest
import requests

from tests.e2e.tracing import TracerRun, free_port, node_server, py_server
from tests.kernel.conftest import require

SLEEP_MS = 20
STATUS = {"ok": 200, "missing": 404, "fail": 500}


def plan(n=23):
    """(method, path, query, status): a mix of GET/POST and 200/404/500."""
    kinds = ["ok", "ok", "missing", "ok", "fail"]
    out = []
    for i in range(n):
        kind = kinds[i % 5]
        method = "POST" if i % 3 == 1 else "GET"
        query = f"q={i}" if i % 4 == 0 else ""
        out.append((method, f"/{kind}/{i}", query, STATUS[kind]))
    return out


def _check(spans, expected, min_ns):
    assert len(spans) == len(expected)
    assert [(s["method"], s["path"], s["status"]) for s in spans] == \
        [(m, p, st) for m, p, _, st in expected]
    for s, (_, path, query, _) in zip(spans, expected, strict=True):
        assert s["protocol"] == "http1"
        assert s["duration_ns"] >= min_ns, s
        assert s["attributes"]["url.path"] == path
        assert s["attributes"].get("url.query", "") == query
        assert len(s["trace_id"]) == 32 and len(s["span_id"]) == 16


@pytest.fixture(autouse=True)
def _needs_kernel():
    require("btf", "ringbuf", "tracepoint_syscalls")


def test_python_server_requests_client_23_exact(tmp_path):
    port = free_port()
    expected = plan()
    with py_server(port, SLEEP_MS) as srv, TracerRun(tmp_path, "--port", str(port)) as tr:
        session = requests.Session()  # the first 12 share one keep-alive connection
        for i, (method, path, query, status) in enumerate(expected):
            url = f"http://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")
            body = b"payload-%d" % i if method == "POST" else None
            send = session.request if i < 12 else requests.request  # then new connections
            r = send(method, url, data=body, headers={"x-request-id": f"req-{i}"})
            assert r.status_code == status
        session.close()
    server_spans = tr.by("server", srv.pid)
    client_spans = tr.by("client", os.getpid())
    _check(server_spans, expected, SLEEP_MS * 1_000_000)
    _check(client_spans, expected, SLEEP_MS * 1_000_000)
    assert len(tr.spans) == 46
    assert [s["attributes"]["http.request.header.x-request-id"] for s in server_spans] == \
        [f"req-{i}" for i in range(23)]
    for s in server_spans:
        assert (s["local_addr"], s["local_port"]) == ("127.0.0.1", port)
        assert s["comm"] == "python" or s["comm"].startswith("python")
        assert s["netns"] == os.stat("/proc/self/ns/net").st_ino
    # keep-alive: the first 12 client spans share one connection (one local port)
    assert len({s["local_port"] for s in client_spans[:12]}) == 1
    assert len({s["local_port"] for s in client_spans[12:]}) == 11
    # a client span contains its server span (same machine, same clock)
    for c, s in zip(client_spans, server_spans, strict=True):
        assert c["start_time_unix_nano"] <= s["start_time_unix_nano"]
        assert c["start_time_unix_nano"] + c["duration_ns"] >= \
            s["start_time_unix_nano"] + s["duration_ns"]
    assert tr.returncode == 0
    assert tr.summary["spans_emitted"] == 46
    assert tr.summary["events_dropped"] == 0
    assert tr.summary["events_seen"] == tr.summary["events_delivered"]
    assert "spans 46" in tr.stderr


@pytest.mark.skipif(not shutil.which("node") or not shutil.which("curl"),
                    reason="node and curl needed")
def test_node_server_curl_client_23_exact(tmp_path):
    port = free_port()
    expected = plan()
    base = f"http://127.0.0.1:{port}"

    def url(path, query):
        return base + path + (f"?{query}" if query else "")

    def curl_args(method, path, query):
        args = ["-s", "-o", "/dev/null", "-X", method]
        if method == "POST":
            args += ["--data-binary", "abc"]
        return args + [url(path, query)]

    with node_server(port, SLEEP_MS) as srv, TracerRun(tmp_path, "--port", str(port)) as tr:
        # the first 10 in one curl: one keep-alive connection (--next between them)
        argv = ["curl"]
        for j, (m, p, q, _) in enumerate(expected[:10]):
            argv += (["--next"] if j else []) + curl_args(m, p, q)
        subprocess.run(argv, check=True, timeout=30)
        curl_pids = []
        for m, p, q, _ in expected[10:]:
            proc = subprocess.run(["curl", *curl_args(m, p, q)], check=True, timeout=30)
            curl_pids.append(proc)
    server_spans = tr.by("server", srv.pid)
    client_spans = [s for s in tr.by("client") if s["comm"] == "curl"]
    _check(server_spans, expected, SLEEP_MS * 1_000_000)
    _check(client_spans, expected, SLEEP_MS * 1_000_000)
    assert {s["comm"] for s in server_spans} == {"node"}
    assert len({s["pid"] for s in client_spans[:10]}) == 1
    assert len({s["pid"] for s in client_spans[10:]}) == 13
    assert tr.summary["events_dropped"] == 0


def _recv_responses(sock, n):
    """Read until n HTTP responses with content-length bodies have arrived."""
    data = b""
    done = 0
    while done < n:
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
        done = data.count(b"len=")
    return data


@pytest.mark.parametrize("make_server", [py_server, node_server], ids=["python", "node"])
def test_pipelining_chunked_and_1mb_bodies(tmp_path, make_server):
    if make_server is node_server and not shutil.which("node"):
        pytest.skip("node needed")
    port = free_port()
    with make_server(port, 1) as srv, TracerRun(tmp_path, "--port", str(port)) as tr:
        # 5 pipelined requests in one write
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"".join(b"GET /ok/p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)))
        _recv_responses(s, 5)
        s.close()
        with requests.Session() as sess:
            # chunked response, then a 1 MB upload and a 1 MB download on the same connection
            r = sess.get(f"http://127.0.0.1:{port}/chunked/50")
            assert r.text.count("chunk-") == 50
            r = sess.post(f"http://127.0.0.1:{port}/ok/upload", data=b"u" * (1 << 20))
            assert r.text == f"len={1 << 20}\n"
            r = sess.get(f"http://127.0.0.1:{port}/big/{1 << 20}")
            assert len(r.content) == 1 << 20
            # framing held: a small request after the big bodies still parses
            assert sess.get(f"http://127.0.0.1:{port}/missing/after").status_code == 404
    server_spans = tr.by("server", srv.pid)
    assert [(x["method"], x["path"], x["status"]) for x in server_spans] == [
        ("GET", f"/ok/p{i}", 200) for i in range(5)] + [
        ("GET", "/chunked/50", 200), ("POST", "/ok/upload", 200),
        ("GET", f"/big/{1 << 20}", 200), ("GET", "/missing/after", 404)]
    client_spans = [x for x in tr.by("client", os.getpid())]
    assert [(x["method"], x["path"], x["status"]) for x in client_spans] == \
        [(x["method"], x["path"], x["status"]) for x in server_spans]
    assert tr.summary["unparsed_connections"] == 0
    assert tr.summary["incomplete_requests"] == 0


def test_connection_opened_before_the_tracer_is_still_traced(tmp_path):
    """A keep-alive connection established before the tracer starts: no
    accept/connect is seen, the role is inferred from the first request line,
    and every later request on it becomes a span on both ends."""
    port = free_port()
    with py_server(port, 1) as srv:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /ok/before HTTP/1.1\r\nHost: x\r\n\r\n")
        _recv_responses(s, 1)
        with TracerRun(tmp_path, "--port", str(port)) as tr:
            sizes = []
            for i in range(5):
                s.sendall(b"GET /ok/after%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                sizes.append(len(_recv_responses(s, 1)))
        s.close()
    expected = [("GET", f"/ok/after{i}", 200) for i in range(5)]
    client = [(x["method"], x["path"], x["status"]) for x in tr.by("client", os.getpid())]
    assert client == expected
    # The server thread was already blocked in read() when the tracer attached:
    # that read's entry (its buffer) was never seen, so the first request is
    # lost on the server side; its response is counted as unparsed bytes, and
    # every later request is a span.
    server = [(x["method"], x["path"], x["status"]) for x in tr.by("server", srv.pid)]
    assert server == expected[1:]
    assert tr.summary["unparsed_bytes"] == sizes[0]
    # the addresses were read from the socket at first sight
    srv_span = tr.by("server", srv.pid)[0]
    assert (srv_span["local_addr"], srv_span["local_port"]) == ("127.0.0.1", port)
    assert tr.summary["unparsed_connections"] == 0
