"""The debuginfod client (tracer/symbols/debuginfod.py) against small HTTP
servers in this process (stdlib http.server on 127.0.0.1): configuration
from the environment, the cache layout and its size bound, the time limit
of a fetch against a server that trickles, servers tried in turn, 404s
remembered, redirects, files too large, and a served file whose build-id
differs (refused, counted, removed). The real `debuginfod` server is
exercised by tests/e2e/test_debuginfo.py. No root."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.cprogs import build as cbuild
from tracer.symbols import ElfSymbols, debugfile
from tracer.symbols.debuginfod import DebuginfodClient

BID = "ab" * 20
BID2 = "cd" * 20
BID3 = "ef" * 20


class Server:
    """routes: URL path -> (status, body, headers, seconds between 1-byte writes or 0)."""

    def __init__(self):
        self.routes: dict[str, tuple] = {}
        self.hits: list[str] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                srv.hits.append(self.path)
                status, body, headers, trickle = srv.routes.get(self.path,
                                                                (404, b"", {}, 0))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if trickle:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(trickle)
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass  # the client gave up

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def serve(self, bid: str, body: bytes, status: int = 200, headers=None, trickle=0.0):
        self.routes[f"/buildid/{bid}/debuginfo"] = (status, body, headers or {}, trickle)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def servers(n: int = 1):
    ss = [Server() for _ in range(n)]
    try:
        yield ss
    finally:
        for s in ss:
            s.close()


def client(tmp_path, urls, **kw) -> DebuginfodClient:
    return DebuginfodClient(list(urls), str(tmp_path / "cache"), **kw)


def test_off_when_unset_from_env_otherwise(tmp_path):
    assert DebuginfodClient.from_env({}) is None
    assert DebuginfodClient.from_env({"DEBUGINFOD_URLS": "  "}) is None
    c = DebuginfodClient.from_env({"DEBUGINFOD_URLS": "http://a:1 https://b/x ftp://c",
                                   "DEBUGINFOD_CACHE_PATH": str(tmp_path),
                                   "DEBUGINFOD_TIMEOUT": "3", "DEBUGINFOD_MAXSIZE": "1000",
                                   "TRACER_DEBUGINFOD_CACHE_MB": "2"})
    assert c.urls == ["http://a:1", "https://b/x"]  # only http(s)
    assert (c.cache_dir, c.timeout_s, c.max_cache_bytes, c.max_file_bytes) == \
        (str(tmp_path), 3.0, 2 << 20, 1000)
    c = DebuginfodClient.from_env({"DEBUGINFOD_URLS": "http://a", "HOME": "/h",
                                   "XDG_CACHE_HOME": "/x", "DEBUGINFOD_TIMEOUT": "junk"})
    assert (c.cache_dir, c.timeout_s, c.max_cache_bytes) == \
        ("/x/debuginfod_client", 10.0, 1024 << 20)


def test_fetch_then_cache_hit(tmp_path):
    with servers() as (s,):
        s.serve(BID, b"x" * 5000)
        c = client(tmp_path, [s.url])
        path = c.fetch(BID)
        assert path == str(tmp_path / "cache" / BID / "debuginfo")
        assert open(path, "rb").read() == b"x" * 5000
        assert c.fetch(BID.upper()) == path  # build-ids are compared in lower case
        assert s.hits == [f"/buildid/{BID}/debuginfo"]
        assert (c.counters["debuginfod_fetched"], c.counters["debuginfod_cache_hits"]) == (1, 1)
        assert os.listdir(tmp_path / "cache" / BID) == ["debuginfo"]  # no temporary left


def test_servers_in_turn_and_404_remembered(tmp_path):
    with servers(2) as (a, b):
        b.serve(BID, b"from b")
        c = client(tmp_path, [a.url, b.url + "/"])
        assert open(c.fetch(BID), "rb").read() == b"from b"
        assert c.fetch(BID2) is None
        assert c.fetch(BID2) is None  # asked once
        assert len(a.hits) == 2 and len(b.hits) == 2
        assert c.counters["debuginfod_not_found"] == 3


def test_bad_build_id_text_never_asks(tmp_path):
    with servers() as (s,):
        c = client(tmp_path, [s.url])
        for bad in ("", "a", "../../etc/passwd", "zz" * 20, "ab/cd"):
            assert c.fetch(bad) is None
        assert s.hits == []


def test_time_limit_per_fetch(tmp_path):
    """A server that sends its headers, then a byte every 0.2 s of 200: the
    fetch gives up at its limit, keeps nothing, and the next server is not
    asked once the time is spent."""
    with servers(2) as (slow, other):
        slow.serve(BID, b"y" * 200, trickle=0.2)
        other.serve(BID, b"z")
        c = client(tmp_path, [slow.url, other.url], timeout_s=1.0)
        t0 = time.monotonic()
        assert c.fetch(BID) is None
        took = time.monotonic() - t0
        assert took < 10, took  # 40 s if the limit did not hold
        assert c.counters["debuginfod_timeouts"] == 2 and other.hits == []
        assert not os.path.exists(tmp_path / "cache" / BID / "debuginfo")
        assert [n for n in os.listdir(tmp_path / "cache" / BID) if n.startswith(".tmp")] == []


def test_cache_size_bound_evicts_oldest(tmp_path):
    with servers() as (s,):
        for bid in (BID, BID2, BID3):
            s.serve(bid, bid.encode() * 100)  # 4000 bytes each
        c = client(tmp_path, [s.url], max_cache_bytes=9000)
        first = c.fetch(BID)
        os.utime(first, (1, 1))  # fetched long ago
        second = c.fetch(BID2)
        os.utime(second, (2, 2))
        assert c.counters["debuginfod_evicted"] == 0  # 8000 bytes fit
        third = c.fetch(BID3)  # 12000 bytes: the oldest goes
        assert not os.path.exists(first) and os.path.exists(second) and os.path.exists(third)
        assert c.counters["debuginfod_evicted"] == 1
        assert sum(size for _, size, _ in c.cache_entries()) == 8000
        # the file just fetched stays even if it alone is at the bound
        c.max_cache_bytes = 4000
        c.trim(keep=third)
        assert [p for _, _, p in c.cache_entries()] == [third]


def test_too_large_not_fetched(tmp_path):
    with servers() as (s,):
        s.serve(BID, b"w" * 3000)
        s.serve(BID2, b"w" * 3000, headers={"Content-Length": "100"})  # lies: cut at the bound
        c = client(tmp_path, [s.url], max_file_bytes=2000)
        assert c.fetch(BID) is None
        assert c.counters["debuginfod_too_large"] == 1
        c = client(tmp_path, [s.url], max_file_bytes=50)
        assert c.fetch(BID2) is None
        assert c.counters["debuginfod_too_large"] == 1
        assert c.cache_entries() == []


def test_redirect_followed(tmp_path):
    with servers(2) as (a, b):
        b.serve(BID, b"moved")
        a.serve(BID, b"", status=302, headers={"Location": f"{b.url}/buildid/{BID}/debuginfo"})
        c = client(tmp_path, [a.url])
        assert open(c.fetch(BID), "rb").read() == b"moved"


def test_server_errors_counted(tmp_path):
    with servers() as (s,):
        s.serve(BID, b"oops", status=500)
        c = client(tmp_path, [s.url, "http://127.0.0.1:1"])  # nothing listens on port 1
        assert c.fetch(BID) is None
        assert c.counters["debuginfod_errors"] == 2


@pytest.mark.skipif(bool(cbuild.missing_tools("split")), reason="needs gcc and binutils")
def test_served_file_with_another_build_id_is_refused(tmp_path):
    """The server answers for the binary's build-id with another build's
    debug file: not trusted, counted, and removed from the cache."""
    out = tmp_path / "cprogs"
    work = cbuild.build("split", out, source="work.c")
    other = cbuild.debug_file_of(cbuild.build("split", out, source="target.c"))
    elf_bid = ElfSymbols.open(str(work)).build_id
    ElfSymbols.clear_cache()
    with servers() as (s,):
        s.serve(elf_bid, other.read_bytes())
        c = client(tmp_path, [s.url])
        debugfile.reset()
        debugfile.configure(roots=[], client=c)
        try:
            elf = ElfSymbols.open(str(work))
            assert elf.debug_file() is None and elf.lookup("work") is None
            counts = debugfile.counters()
            assert counts["build_id_mismatch"] == 1 and counts["debuginfod_fetched"] == 1
            assert c.cache_entries() == []
            # the right file: found, named from debuginfod
            s.serve(elf_bid, cbuild.debug_file_of(work).read_bytes())
            c._missing.clear()
            debugfile.clear_cache()
            ElfSymbols.clear_cache()
            elf = ElfSymbols.open(str(work))
            assert elf.debug_file().origin == "debuginfod"
            assert elf.lookup("work").source == "debuginfod"
        finally:
            debugfile.reset()
            ElfSymbols.clear_cache()
