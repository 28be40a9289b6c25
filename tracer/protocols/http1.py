"""Incremental, capture-gap-aware HTTP/1.x parser for one direction of a stream.

The kernel hands us, per syscall, `size` bytes moved of which only the first
`len(payload)` (capture_bytes) were copied. Bytes past the capture are a gap:
we know how many there are, not what they are. So:
- body framing by content-length and chunk-data lengths counts `size`, and
  survives any gap;
- a gap over a header block or a chunk-size line loses framing: the message
  goes on until a later syscall *starts* with a valid request/status line, the
  other direction starts a new message (the session decides, see
  Http1Session), a fully-captured syscall ends with the chunked terminator, or
  the connection closes.

Libraries like h11/httptools need every byte, hence this small hand parser.
Hot path rules: one bytes.find for the header end, one split for the lines,
a dict lookup per header line, no regexes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tracer.events import DataEvent

if TYPE_CHECKING:
    from tracer.stats import Stats

# parser states
HEAD = 0  # expecting a start line (exact framing)
BODY = 1  # content-length body: `remaining` bytes left
CHUNK_SIZE = 2  # expecting a chunk-size line
CHUNK_DATA = 3  # chunk data + its CRLF: `remaining` bytes left
TRAILER = 4  # after the last chunk: trailers up to an empty line
LOST = 5  # framing unknown: resync on a syscall that starts a message
DEAD = 6  # given up (not HTTP / upgraded): ignore everything

MAX_HEAD = 32 * 1024  # a header block buffered across syscalls beyond this is treated as cut
MAX_CHUNK_LINE = 1024
# Pipelined requests awaiting their responses, per connection. A peer that
# never answers must not grow the queue without bound; past this the
# connection is given up (counted), since skipping a request would pair the
# later responses with the wrong requests.
MAX_PIPELINED = 256

_METHODS = {
    m.encode(): m
    for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
              "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "PURGE")
}

# Headers kept (lowercased wire name -> key in Message.headers). The framing
# ones are needed here; the rest feed span attributes and correlation.
_SELECT = {
    k.encode(): k
    for k in ("host", "user-agent", "traceparent", "tracestate", "b3", "x-b3-traceid",
              "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-request-id",
              "content-type", "content-length", "transfer-encoding", "connection")
}

_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}
_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


def is_request_start(data: bytes) -> bool:
    """Does this syscall payload start with something like a request line?"""
    sp = data.find(b" ", 0, 16)
    if sp < 3:
        return False
    m = data[:sp]
    if m in _METHODS:
        return True
    # unknown extension method: insist on the version to keep false positives out
    if not (m.isalpha() and m.isupper()):
        return False
    nl = data.find(_CRLF, sp)
    return nl > 0 and data.find(b" HTTP/1.", sp, nl) > 0


def is_response_start(data: bytes) -> bool:
    code = data[9:12]
    return data.startswith(b"HTTP/1.") and len(code) == 3 and code.isdigit()


class Message:
    """One HTTP/1 message. first_ev/last_ev: the DataEvents that carried its
    first and (so far) last byte; the span takes timestamps and pid/tid from them."""

    __slots__ = ("is_request", "method", "path", "query", "target", "version", "status",
                 "headers", "content_length", "chunked", "close", "truncated",
                 "first_ev", "last_ev", "ctx")

    def __init__(self, is_request: bool, first_ev: DataEvent) -> None:
        self.is_request = is_request
        self.method = ""
        self.path = ""
        self.query = ""
        self.target = ""
        self.version = ""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.content_length = -1  # -1: absent
        self.chunked = False
        self.close = False
        self.truncated = False
        self.first_ev = first_ev
        self.last_ev = first_ev
        self.ctx = None  # correlate.Context of a request, set when its head is parsed

    def __repr__(self) -> str:
        if self.is_request:
            return f"<Request {self.method} {self.target} HTTP/{self.version}>"
        return f"<Response {self.status} HTTP/{self.version}>"


class Listener(Protocol):
    """What a parser tells its owner (Http1Session, or a test recorder)."""

    def on_head(self, parser: Http1Parser, msg: Message) -> None: ...

    def on_end(self, parser: Http1Parser, msg: Message) -> None: ...

    def on_malformed(self, parser: Http1Parser, nbytes: int) -> None: ...

    def request_method(self) -> str | None:
        """Method of the request the next response answers (HEAD has no body)."""


class Http1Parser:
    """Requests (is_request=True) or responses of one direction of one connection."""

    __slots__ = ("is_request", "listener", "stats", "state", "buf", "buf_ev", "cur", "remaining",
                 "soft")

    def __init__(self, is_request: bool, listener: Listener, stats: Stats) -> None:
        self.is_request = is_request
        self.listener = listener
        self.stats = stats
        self.state = HEAD
        self.buf = b""  # bytes of an unfinished head / chunk line, kept across syscalls
        self.buf_ev: DataEvent | None = None  # the event that carried buf's first byte
        self.cur: Message | None = None  # the message being received
        self.remaining = 0
        self.soft = False  # LOST: accept a merely plausible head start (see _resync)

    # ---- feeding ----

    def feed(self, ev: DataEvent) -> None:
        state = self.state
        if state == LOST:
            if not self._resync(ev):
                return
            state = HEAD
        elif state == DEAD:
            return
        data = ev.payload
        size = ev.size
        if self.buf:
            # positions stay consistent: the buffered bytes were all captured
            data = self.buf + data
            size += len(self.buf)
            self.buf = b""
        cap = len(data)
        pos = 0
        while pos < size:
            if state == BODY or state == CHUNK_DATA:
                rem = self.remaining
                avail = size - pos
                cur = self.cur
                cur.last_ev = ev
                if avail < rem:
                    # the rest of this syscall (captured or not) is body
                    self.remaining = rem - avail
                    return
                pos += rem
                self.remaining = 0
                if state == BODY:
                    self.state = state = HEAD
                    self.cur = None
                    self.listener.on_end(self, cur)
                    if self.state != HEAD:  # the listener stopped us (upgrade)
                        return
                else:
                    self.state = state = CHUNK_SIZE
            elif state == HEAD:
                pos = self._head(ev, data, pos, cap, size)
                state = self.state
                if state >= LOST:
                    return
            elif state == CHUNK_SIZE:
                if pos >= cap:
                    self._lose_framing(ev)
                    return
                nl = data.find(_CRLF, pos, cap)
                if nl < 0:
                    if cap < size:
                        self._lose_framing(ev)
                    elif cap - pos > MAX_CHUNK_LINE:
                        self._malformed(size - pos)
                    else:
                        self.buf = data[pos:cap]
                        self.cur.last_ev = ev
                    return
                semi = data.find(b";", pos, nl)
                digits = data[pos:nl if semi < 0 else semi].strip()
                try:
                    n = int(digits, 16)
                except ValueError:
                    n = -1
                if n < 0 or not digits.isalnum():  # isalnum: no "0x", "_", "+", spaces
                    self._malformed(size - pos)
                    return
                pos = nl + 2
                if n:
                    self.remaining = n + 2  # the CRLF after the data rides along
                    self.state = state = CHUNK_DATA
                else:
                    self.state = state = TRAILER
            else:  # TRAILER
                cur = self.cur
                cur.last_ev = ev
                if pos >= cap:
                    # In the gap: the usual trailer is just CRLF; anything else lost.
                    if size - pos == 2:
                        pos = size
                        self._end_cur()
                    else:
                        self._lose_framing(ev)
                    return
                if data.startswith(_CRLF, pos):
                    pos += 2
                else:
                    end = data.find(_HEAD_END, pos, cap)
                    if end < 0:
                        if cap < size:
                            self._lose_framing(ev)
                        elif cap - pos > MAX_HEAD:
                            self._malformed(size - pos)
                        else:
                            self.buf = data[pos:cap]
                        return
                    pos = end + 4
                self.state = state = HEAD
                self._end_cur()
                if self.state != HEAD:
                    return

    def _end_cur(self) -> None:
        cur = self.cur
        self.cur = None
        self.state = HEAD
        self.listener.on_end(self, cur)

    def _head(self, ev: DataEvent, data: bytes, pos: int, cap: int, size: int) -> int:
        """Parse a head starting at pos; returns the position after it."""
        if pos >= cap:
            # the next message starts inside the gap: it is lost whole
            self.stats.truncated_messages += 1
            self.stats.unparsed_bytes += size - pos
            self.state = LOST
            return size
        # tolerate stray CRLFs between messages (RFC 9112 2.2)
        while data.startswith(_CRLF, pos):
            pos += 2
            if pos >= cap:
                if pos < size:
                    self.state = LOST
                    self.stats.unparsed_bytes += size - pos
                return size
        end = data.find(_HEAD_END, pos, cap)
        if end < 0:
            if cap == size and cap - pos <= MAX_HEAD:
                # no gap: the head continues in the next syscall
                if not self._plausible(data, pos, cap):
                    self._malformed(size - pos)
                    return size
                if not self.buf_ev:
                    self.buf_ev = ev
                self.buf = data[pos:cap]
                return size
            first = self.buf_ev or ev
            self.buf_ev = None
            msg = self._parse_head(data, pos, cap, first, True)
            if msg is None:
                self._malformed(size - pos)
                return size
            msg.last_ev = ev
            self.stats.truncated_messages += 1
            self.cur = msg
            self.state = LOST
            self.listener.on_head(self, msg)
            return size
        first = self.buf_ev or ev
        self.buf_ev = None
        msg = self._parse_head(data, pos, end, first, False)
        if msg is None:
            self._malformed(size - pos)
            return size
        msg.last_ev = ev
        pos = end + 4
        listener = self.listener
        listener.on_head(self, msg)
        if self.state != HEAD:  # the listener stopped us
            return size
        if self.is_request:
            if msg.chunked:
                self.cur = msg
                self.state = CHUNK_SIZE
            elif msg.content_length > 0:
                self.cur = msg
                self.remaining = msg.content_length
                self.state = BODY
            else:
                listener.on_end(self, msg)
            return pos
        status = msg.status
        method = listener.request_method()
        if status < 200 or status == 204 or status == 304 or method == "HEAD":
            listener.on_end(self, msg)
        elif msg.chunked:
            self.cur = msg
            self.state = CHUNK_SIZE
        elif msg.content_length >= 0:
            if msg.content_length:
                self.cur = msg
                self.remaining = msg.content_length
                self.state = BODY
            else:
                listener.on_end(self, msg)
        else:
            # delimited by close (RFC 9112 6.3): end unknown, like lost framing
            self.cur = msg
            self.state = LOST
        return pos

    def _parse_head(self, data: bytes, pos: int, end: int, ev: DataEvent,
                    truncated: bool) -> Message | None:
        lines = data[pos:end].split(_CRLF)
        if truncated and len(lines) > 1:
            lines.pop()  # the last line may be cut mid-way
        start = lines[0]
        msg = Message(self.is_request, ev)
        msg.truncated = truncated
        if self.is_request:
            sp = start.find(b" ")
            if sp <= 0:
                return None
            mb = start[:sp]
            method = _METHODS.get(mb)
            if method is None:
                if not (mb.isalpha() and mb.isupper()):
                    return None
                method = mb.decode("ascii")
            sp2 = start.rfind(b" ")
            if sp2 > sp and start.startswith(b"HTTP/1.", sp2 + 1):
                target = start[sp + 1:sp2]
                v = start[sp2 + 6:]
                msg.version = _VERSIONS.get(v) or v.decode("latin-1")
            elif truncated and len(lines) == 1:
                target = start[sp + 1:]  # the capture cut the request line itself
            else:
                return None
            msg.method = method
            if target[:4] == b"http":
                # absolute-form (proxies): keep the path part only
                slashes = target.find(b"//")
                slash = target.find(b"/", slashes + 2) if slashes >= 0 else -1
                target = target[slash:] if slash >= 0 else b"/"
            t = target.decode("latin-1")
            msg.target = t
            path, sep, query = t.partition("?")
            msg.path = path
            msg.query = query
        else:
            if not start.startswith(b"HTTP/1.") or len(start) < 12:
                return None
            code = start[9:12]
            if not code.isdigit() or start[8:9] != b" " or (len(start) > 12 and start[12] != 32):
                return None
            msg.status = int(code)
            v = start[5:8]
            msg.version = _VERSIONS.get(v) or v.decode("latin-1")
        hdrs = msg.headers
        select = _SELECT.get
        for i in range(1, len(lines)):
            line = lines[i]
            c = line.find(b":")
            if c <= 0:
                continue  # obs-fold or junk line: ignore rather than fail the message
            key = select(line[:c].lower())
            if key is not None:
                hdrs[key] = line[c + 1:].strip().decode("latin-1")
        if not hdrs:
            return msg
        te = hdrs.get("transfer-encoding")
        if te is not None:
            msg.chunked = te.lower().endswith("chunked")
        else:
            cl = hdrs.get("content-length")
            if cl is not None:
                if not cl.isdigit():
                    # "5, 5": duplicates are allowed if equal (RFC 9110 8.6)
                    vals = {v.strip() for v in cl.split(",")}
                    if len(vals) != 1 or not (cl := vals.pop()).isdigit():
                        return None
                msg.content_length = int(cl)
        conn = hdrs.get("connection")
        if conn is not None:
            msg.close = "close" in conn.lower()
        return msg

    def _plausible(self, data: bytes, pos: int, cap: int) -> bool:
        """Could data[pos:cap] be the beginning of a head? (rejects binary early)"""
        n = min(cap - pos, 16)
        if self.is_request:
            sp = data.find(b" ", pos, pos + n)
            if sp < 0:
                part = data[pos:pos + n]
                return n < 16 and part.isalpha() and part.isupper()
            mb = data[pos:sp]
            return mb in _METHODS or (mb.isalpha() and mb.isupper())
        return b"HTTP/1."[:n] == data[pos:pos + min(n, 7)]

    # ---- framing loss / resync ----

    def _lose_framing(self, ev: DataEvent) -> None:
        self.stats.framing_lost += 1
        self.cur.last_ev = ev
        self.buf = b""
        self.state = LOST

    def _resync(self, ev: DataEvent) -> bool:
        """LOST: True if this syscall starts a new message (parse it normally)."""
        data = ev.payload
        soft = self.soft
        self.soft = False
        if is_request_start(data) if self.is_request else is_response_start(data):
            self.state = HEAD
            if self.cur is not None:
                self._end_cur()
                return self.state == HEAD
            return True
        cur = self.cur
        if cur is None:
            if soft and self._plausible(data, 0, len(data)):
                # the other direction ended our message: the next byte is most
                # likely a new head, even one split after its first bytes
                self.state = HEAD
                return True
            self.stats.unparsed_bytes += ev.size
            return False
        cur.last_ev = ev
        if cur.chunked and ev.size == len(data) and data.endswith(_LAST_CHUNK):
            self._end_cur()
        return False

    def finish_lost(self) -> bool:
        """End a message whose framing is lost, because the other direction
        started a message (or the socket closed). True if one was ended."""
        if self.state == LOST and self.cur is not None:
            cur = self.cur
            self.cur = None
            self.soft = True
            self.listener.on_end(self, cur)
            return True
        return False

    def _malformed(self, nbytes: int) -> None:
        self.stats.malformed_messages += 1
        self.stop()
        self.listener.on_malformed(self, nbytes)

    def stop(self) -> None:
        self.state = DEAD
        self.cur = None
        self.buf = b""
        self.buf_ev = None

    @property
    def busy(self) -> bool:
        """A message is under way (head buffered or body unfinished)."""
        return bool(self.buf) or self.cur is not None
