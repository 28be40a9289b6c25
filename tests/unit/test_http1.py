"""HTTP/1 parser, one direction at a time, with a recording listener."""

from __future__ import annotations

import pytest

from tests.unit.synth import INGRESS, Clock, Conversation, http_request, http_response
from tracer.protocols.http1 import (
    BODY,
    DEAD,
    HEAD,
    LOST,
    MAX_LENGTH,
    Http1Parser,
    Listener,
    is_request_start,
    is_response_start,
)
from tracer.stats import Stats


class Recorder(Listener):
    def __init__(self, method: str | None = None) -> None:
        self.heads = []
        self.ends = []
        self.malformed = []
        self.method = method

    def on_head(self, parser, msg):
        self.heads.append(msg)

    def on_end(self, parser, msg):
        self.ends.append(msg)

    def on_malformed(self, parser, nbytes):
        self.malformed.append(nbytes)

    def request_method(self):
        return self.method


def make(is_request=True, method=None, capture=4096):
    stats = Stats()
    rec = Recorder(method)
    parser = Http1Parser(is_request, rec, stats)
    conv = Conversation(Clock(), capture_bytes=capture)
    return parser, rec, stats, conv


def push(parser, conv, data, splits=None, size=None):
    if size is not None:
        evs = [conv.syscall(INGRESS, data, size=size)]
    else:
        evs = conv.send(INGRESS, data, splits)
    for ev in evs:
        parser.feed(ev)
    return evs


def test_request_line_and_selected_headers():
    p, rec, stats, conv = make()
    raw = http_request("POST", "/api/v1/items?id=7&x=y", {
        "User-Agent": "curl/8.5", "X-Request-ID": "abc-1", "Content-Type": "application/json",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Other": "dropped", "Connection": "close",
    }, body=b'{"a": 1}')
    evs = push(p, conv, raw)
    assert len(rec.heads) == 1 and len(rec.ends) == 1
    m = rec.ends[0]
    assert (m.method, m.path, m.query, m.version) == ("POST", "/api/v1/items", "id=7&x=y", "1.1")
    assert m.target == "/api/v1/items?id=7&x=y"
    assert m.content_length == 8 and not m.chunked and m.close
    assert m.headers == {
        "host": "svc.test", "user-agent": "curl/8.5", "x-request-id": "abc-1",
        "content-type": "application/json", "content-length": "8", "connection": "close",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    assert m.first_ev is evs[0] and m.last_ev is evs[0]
    assert p.state == HEAD and stats.as_dict() == Stats().as_dict()


def test_absolute_form_and_options_star():
    p, rec, _, conv = make()
    push(p, conv, b"GET http://example.com:8080/x/y?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
                  b"OPTIONS * HTTP/1.0\r\n\r\n")
    assert [(m.method, m.path, m.query, m.version) for m in rec.ends] == [
        ("GET", "/x/y", "q=1", "1.1"), ("OPTIONS", "*", "", "1.0")]


@pytest.mark.parametrize("cut", range(1, 60, 3))
def test_head_split_anywhere(cut):
    p, rec, _, conv = make()
    raw = http_request("GET", "/split", {"User-Agent": "ua"}) + http_request("GET", "/next")
    evs = push(p, conv, raw, splits=[cut])
    assert [m.path for m in rec.ends] == ["/split", "/next"]
    assert rec.ends[0].first_ev is evs[0]
    assert rec.ends[0].headers["user-agent"] == "ua"


def test_head_byte_by_byte():
    p, rec, stats, conv = make()
    raw = http_request("DELETE", "/x/1", {"X-Request-ID": "r"})
    evs = push(p, conv, raw, splits=range(1, len(raw)))
    assert len(evs) == len(raw)
    (m,) = rec.ends
    assert (m.method, m.path, m.headers["x-request-id"]) == ("DELETE", "/x/1", "r")
    assert m.first_ev is evs[0] and m.last_ev is evs[-1]
    assert stats.malformed_messages == 0


def test_response_status_and_bodies():
    p, rec, _, conv = make(is_request=False, method="GET")
    raw = (http_response(200, body=b"hello") + http_response(404, body=b"")
           + http_response(500, {"Content-Type": "text/plain"}, body=b"boom", reason="Oops"))
    push(p, conv, raw, splits=[5, 40, 41, 90])
    assert [(m.status, m.version, m.content_length) for m in rec.ends] == [
        (200, "1.1", 5), (404, "1.1", 0), (500, "1.1", 4)]
    assert rec.ends[2].headers["content-type"] == "text/plain"


@pytest.mark.parametrize("status", [204, 304, 100, 103])
def test_bodiless_statuses(status):
    # Even a (bogus) Content-Length must not make the parser wait for a body.
    p, rec, _, conv = make(is_request=False, method="GET")
    push(p, conv, http_response(status, {"Content-Length": "10"}, length=False)
         + http_response(200, body=b"x"))
    assert [m.status for m in rec.ends] == [status, 200]


def test_head_response_has_no_body():
    p, rec, _, conv = make(is_request=False, method="HEAD")
    push(p, conv, http_response(200, {"Content-Length": "1000"}, length=False))
    assert [m.status for m in rec.ends] == [200] and p.state == HEAD


def test_chunked_with_extensions_trailers_and_splits():
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (n, b"a" * n) for n in (1, 16, 255, 4000))
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + body
           + b"0\r\nX-Trailer: yes\r\n\r\n" + http_response(201, body=b"ok"))
    for splits in ([], [60, 61, 62, 63], list(range(50, len(raw), 7))):
        p, rec, stats, conv = make(is_request=False, method="GET", capture=len(raw))
        evs = push(p, conv, raw, splits=splits)
        assert [m.status for m in rec.ends] == [200, 201], splits
        assert rec.ends[0].chunked
        assert stats.framing_lost == 0 and stats.malformed_messages == 0
        assert rec.ends[1].last_ev is evs[-1]


def test_content_length_body_through_capture_gaps():
    # 1 MB body, 512-byte capture, 64 KiB reads: framing by size, not payload.
    p, rec, stats, conv = make(capture=512)
    conv.max_syscall = 65536
    raw = http_request("PUT", "/big", body=b"z" * 1_000_000) + http_request("GET", "/after")
    evs = push(p, conv, raw)
    assert len(evs) > 15 and all(len(ev.payload) <= 512 for ev in evs)
    assert [m.path for m in rec.ends] == ["/big"]  # /after starts inside a gap
    assert stats.truncated_messages == 1 and p.state == LOST
    # ... and the parser resynchronises on the next syscall that starts a request
    push(p, conv, http_request("GET", "/resync"))
    assert [m.path for m in rec.ends] == ["/big", "/resync"]


def test_body_gap_then_next_request_at_syscall_boundary():
    p, rec, stats, conv = make(capture=512)
    body = b"b" * 300_000
    push(p, conv, http_request("POST", "/up", body=body))
    push(p, conv, http_request("GET", "/next"))
    assert [m.path for m in rec.ends] == ["/up", "/next"]
    assert stats.truncated_messages == 0 and stats.unparsed_bytes == 0


def test_truncated_head_is_counted_and_resyncs():
    p, rec, stats, conv = make(capture=64)
    big = http_request("GET", "/cookie?x=1", {"Cookie": "c" * 300}, body=b"q" * 10)
    push(p, conv, big)
    assert stats.truncated_messages == 1 and p.state == LOST
    (m,) = rec.heads
    assert (m.method, m.path, m.query, m.truncated) == ("GET", "/cookie", "x=1", True)
    # continuation syscalls of the lost message are attributed to it
    ev = push(p, conv, b"more body bytes")[0]
    assert m.last_ev is ev
    push(p, conv, http_request("GET", "/ok"))
    assert [x.path for x in rec.ends] == ["/cookie", "/ok"]
    assert rec.ends[0].last_ev is ev
    assert stats.malformed_messages == 0


def test_request_line_cut_by_capture():
    p, rec, stats, conv = make(capture=32)
    push(p, conv, http_request("GET", "/" + "p" * 100))
    (m,) = rec.heads
    assert m.method == "GET" and m.path == "/" + "p" * 27 and m.version == ""
    assert stats.truncated_messages == 1


def test_chunked_gap_inside_chunk_keeps_framing():
    p, rec, stats, conv = make(is_request=False, method="GET", capture=512)
    raw = http_response(200, body=b"c" * 50_000, chunked=True, chunk_size=20_000)
    head_end = raw.index(b"\r\n\r\n") + 4
    # syscalls start at each size line, so the gaps fall inside chunk data only
    starts = [head_end + i * (20_000 + len(b"4e20\r\n\r\n")) for i in range(3)]
    push(p, conv, raw, splits=[100, *starts, len(raw) - 5])
    assert [m.status for m in rec.ends] == [200] and stats.framing_lost == 0


def test_chunked_gap_over_size_line_falls_back_to_terminator():
    p, rec, stats, conv = make(is_request=False, method="GET", capture=512)
    chunks = http_response(200, body=b"c" * 3000, chunked=True, chunk_size=700)
    head_end = chunks.index(b"\r\n\r\n") + 4
    push(p, conv, chunks[:-5])  # one syscall, the gap covers several size lines
    assert stats.framing_lost == 1 and not rec.ends
    ev = push(p, conv, chunks[-5:])[0]  # fully captured, ends with 0\r\n\r\n
    assert [m.status for m in rec.ends] == [200] and rec.ends[0].last_ev is ev
    assert head_end < 512


def test_malformed_start_line():
    p, rec, stats, conv = make()
    push(p, conv, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200)))
    assert p.state == DEAD and stats.malformed_messages == 1
    assert rec.malformed == [211]


@pytest.mark.parametrize("raw", [
    b"GET /x HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
    b"GET /x HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
    b"GET /x HTTP/2.0\r\n\r\n",
    b"GET /x\r\n\r\n",
    b"get /x HTTP/1.1\r\n\r\n",
    b"GET /x HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n",  # a digit to str.isdigit(), not to int()
])
def test_malformed_requests(raw):
    p, rec, stats, conv = make()
    push(p, conv, raw)
    assert stats.malformed_messages == 1 and not rec.heads and p.state == DEAD


def test_duplicate_equal_content_length_is_fine():
    p, rec, _, conv = make()
    push(p, conv, b"POST /x HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabcGET /y HTTP/1.1\r\n\r\n")
    assert [m.path for m in rec.ends] == ["/x", "/y"]


def test_huge_content_length_is_capped():
    p, rec, stats, conv = make()
    push(p, conv, b"POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\nabc")
    assert p.state == BODY and p.remaining == MAX_LENGTH - 3 and not rec.ends
    assert stats.malformed_messages == 0


def test_bad_chunk_size_is_malformed():
    p, rec, stats, conv = make(is_request=False, method="GET")
    push(p, conv, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert stats.malformed_messages == 1 and p.state == DEAD


def test_close_delimited_response_is_lost_framing():
    p, rec, _, conv = make(is_request=False, method="GET")
    push(p, conv, http_response(200, body=b"until close", length=False))
    assert p.state == LOST and p.cur is not None and not rec.ends
    assert p.finish_lost() and [m.status for m in rec.ends] == [200]


def test_body_state_counts_remaining():
    p, rec, _, conv = make(capture=48)
    push(p, conv, b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
    assert p.state == BODY and p.remaining == 100
    push(p, conv, b"y" * 60)
    assert p.remaining == 40
    push(p, conv, b"y" * 40)
    assert p.state == HEAD and len(rec.ends) == 1


def test_start_detectors():
    assert is_request_start(b"GET / HTTP/1.1\r\n")
    assert is_request_start(b"PROPFIND /x HTTP/1.1\r\n")
    assert is_request_start(b"FOO /x HTTP/1.1\r\n")
    assert not is_request_start(b"FOO /x\r\n")
    assert not is_request_start(b"get / HTTP/1.1\r\n")
    assert not is_request_start(b"\x00\x01\x02 GET")
    assert not is_request_start(b"")
    assert is_response_start(b"HTTP/1.1 200 OK\r\n")
    assert not is_response_start(b"HTTP/1.1 2")
    assert not is_response_start(b"HTTP/2 200")
