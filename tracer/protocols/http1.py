# cython: annotation_typing=False, nonecheck=True
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
Hot path rules: a head is scanned once for its end and once for its lines
(compiled with the types in http1.pxd, these are C loops over the bytes); str
objects only for the start line's parts and the selected header values; no
regexes. The first line holds the Cython directives: annotations are for
readers (the .pxd has the C types); a typed object that is None raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cython

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
# The same, as C ints when compiled (module globals are dict lookups there).
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _LOST, _DEAD = (
    HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, TRAILER, LOST, DEAD)

MAX_HEAD = 32 * 1024  # a header block buffered across syscalls beyond this is treated as cut
MAX_CHUNK_LINE = 1024
# Pipelined requests awaiting their responses, per connection. A peer that
# never answers must not grow the queue without bound; past this the
# connection is given up (counted), since skipping a request would pair the
# later responses with the wrong requests.
MAX_PIPELINED = 256
# Content-length and chunk sizes are capped here (C integers when compiled):
# a body this long never ends in practice, capped or not.
MAX_LENGTH = 1 << 62
_MAX_LENGTH = MAX_LENGTH

_METHOD_NAMES = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
                 "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "PURGE")
_METHODS = {m.encode(): m for m in _METHOD_NAMES}

# Headers kept (lowercase wire name, also the key in Message.headers). The
# framing ones are needed here; the rest feed span attributes and correlation.
_NAMES = ("host", "user-agent", "traceparent", "tracestate", "b3", "x-b3-traceid",
          "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-request-id",
          "content-type", "content-length", "transfer-encoding", "connection")
# Message keeps each name's value bounds in C arrays of this size (http1.pxd)
assert len(_NAMES) == 14
_K_CONTENT_LENGTH = _NAMES.index("content-length")
_K_TRANSFER_ENCODING = _NAMES.index("transfer-encoding")
_K_CONNECTION = _NAMES.index("connection")


def _candidates(names: tuple[str, ...]) -> tuple[bytes, bytes, bytes]:
    """For _match: the names grouped by length, lowercased and concatenated
    (table); where each length's group starts in table (start[n], and
    start[n + 1] is where it ends); the index in names of the name at each
    offset of table (num)."""
    table, num, start = b"", b"", []
    for n in range(max(map(len, names)) + 2):
        start.append(len(table))
        for i, k in enumerate(names):
            if len(k) == n:
                table += k.lower().encode()
                num += bytes([i]) + bytes(n - 1)
    return table, bytes(start), num


_NAME_TABLE, _NAME_START, _NAME_NUM = _candidates(_NAMES)
_METHOD_TABLE, _METHOD_START, _METHOD_NUM = _candidates(_METHOD_NAMES)
# the same lookups as plain Python (lowercased wire name -> index)
_SELECT = {k.encode(): i for i, k in enumerate(_NAMES)}
_METHOD_INDEX = {m.encode(): i for i, m in enumerate(_METHOD_NAMES)}

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


# ---- byte scans over data[i:end] ----
# Compiled, they read the bytes without bounds checks: each first clips its
# range to the data, so every index it reads is in range. As plain Python they
# are the equivalent bytes methods (a loop per byte would be slow there).

@cython.boundscheck(False)
@cython.wraparound(False)
def _find(data: bytes, i: int, end: int, ch: int) -> int:
    """bytes.find(ch, i, end) for i >= 0."""
    if not cython.compiled:
        return data.find(ch, i, end)
    i = max(i, 0)
    end = min(end, len(data))
    while i < end:
        if data[i] == ch:
            return i
        i += 1
    return -1


@cython.boundscheck(False)
@cython.wraparound(False)
def _rfind(data: bytes, i: int, end: int, ch: int) -> int:
    """bytes.rfind(ch, i, end) for i >= 0."""
    if not cython.compiled:
        return data.rfind(ch, i, end)
    i = max(i, 0)
    end = min(end, len(data))
    while end > i:
        end -= 1
        if data[end] == ch:
            return end
    return -1


def _line_end(data: bytes, i: int, end: int) -> int:
    """Where the first CRLF in data[i:end] starts, or end if there is none."""
    if not cython.compiled:
        n = data.find(_CRLF, i, end)
        return end if n < 0 else n
    stop = min(end, len(data))
    i = max(i, 0)
    s = cython.cast(cython.p_char, data)
    while i + 1 < stop:
        p = memchr(s + i + 1, 10, stop - i - 1)  # noqa: F821 (cimported in http1.pxd)
        if p == cython.NULL:
            break
        j = cython.cast(cython.p_char, p) - s  # i < j < stop
        if s[j - 1] == 13:
            return j - 1
        i = j
    return end


def _head_end(data: bytes, i: int, end: int) -> int:
    """Where the first empty line (CRLF CRLF) in data[i:end] starts, or -1:
    bytes.find for i >= 0."""
    if not cython.compiled:
        return data.find(_HEAD_END, i, end)
    stop = min(end, len(data))
    i = max(i, 0)
    s = cython.cast(cython.p_char, data)
    while i + 3 < stop:
        p = memchr(s + i + 3, 10, stop - i - 3)  # noqa: F821 (cimported in http1.pxd)
        if p == cython.NULL:
            break
        j = cython.cast(cython.p_char, p) - s  # i + 3 <= j < stop
        if s[j - 1] == 13 and s[j - 2] == 10 and s[j - 3] == 13:
            return j - 3
        i = j - 2
    return -1


@cython.boundscheck(False)
@cython.wraparound(False)
def _startswith(data: bytes, i: int, end: int, prefix: bytes) -> bool:
    """data.startswith(prefix, i, end) for i >= 0."""
    if not cython.compiled:
        return data.startswith(prefix, i, end)
    n = len(prefix)
    if i < 0 or i + n > min(end, len(data)):
        return False
    for k in range(n):
        if data[i + k] != prefix[k]:
            return False
    return True


@cython.boundscheck(False)
@cython.wraparound(False)
def _upper_alpha(data: bytes, i: int, end: int) -> bool:
    """data[i:end] is non-empty and all of it A-Z (bytes.isalpha() and isupper())."""
    if not cython.compiled:
        part = data[i:end]
        return part.isalpha() and part.isupper()
    i = max(i, 0)
    end = min(end, len(data))
    if i >= end:
        return False
    while i < end:
        c = data[i]
        if c < 65 or c > 90:
            return False
        i += 1
    return True


@cython.boundscheck(False)
@cython.wraparound(False)
def _match(data: bytes, i: int, n: int, table: bytes, start: bytes, num: bytes) -> int:
    """The index of data[i:i + n], ASCII-lowercased, among the names of a
    _candidates() table: -1 if it is none of them (or n <= 0)."""
    if n <= 0 or n + 1 >= len(start) or i < 0 or i + n > len(data):
        return -1
    off = start[n]
    stop = start[n + 1]  # <= len(table) == len(num), and stop - off is a multiple of n
    while off < stop:
        j = 0
        while j < n:
            c = data[i + j]
            if 65 <= c <= 90:
                c += 32
            if c != table[off + j]:
                break
            j += 1
        if j == n:
            return num[off]
        off += n
    return -1


def _method(data: bytes, i: int, n: int) -> str:
    """The method data[i:i + n], known to be all A-Z."""
    if not cython.compiled:
        k = _METHOD_INDEX.get(data[i:i + n], -1)
    else:
        k = _match(data, i, n, _METHOD_TABLE, _METHOD_START, _METHOD_NUM)
    if k < 0:
        return data[i:i + n].decode("ascii")  # an extension method
    return _METHOD_NAMES[k]


@cython.boundscheck(False)
@cython.wraparound(False)
def _icontains(data: bytes, i: int, end: int, word: bytes) -> bool:
    """word (lowercase) in data[i:end].lower()."""
    if not cython.compiled:
        return word in data[i:end].lower()
    i = max(i, 0)
    n = len(word)
    last = min(end, len(data)) - n
    while i <= last:
        j = 0
        while j < n:
            c = data[i + j]
            if 65 <= c <= 90:
                c += 32
            if c != word[j]:
                break
            j += 1
        if j == n:
            return True
        i += 1
    return False


def _iendswith(data: bytes, i: int, end: int, word: bytes) -> bool:
    """data[i:end].lower().endswith(word), word lowercase."""
    start = end - len(word)
    return start >= i and _icontains(data, start, end, word)


def _digits(data: bytes, i: int, end: int) -> int:
    """data[i:end] as a decimal number (at most MAX_LENGTH), or -1 unless it is
    only ASCII digits."""
    if i >= end or end > len(data):
        return -1
    n = 0
    while i < end:
        d = data[i] - 48
        if d < 0 or d > 9:
            return -1
        n = _MAX_LENGTH if n > (_MAX_LENGTH - d) // 10 else n * 10 + d
        i += 1
    return n


def _version(data: bytes, i: int, end: int) -> str:
    """The version after "HTTP/", data[i:end] (already known to start with "1.")."""
    if end - i == 3:
        if data[i + 2] == 49:
            return "1.1"
        if data[i + 2] == 48:
            return "1.0"
    return data[i:end].decode("latin-1")


def _is_digits(s: str) -> bool:
    """Only ASCII digits: str.isdigit() admits some that int() refuses ("²")."""
    return s.isascii() and s.isdigit()


class Message:
    """One HTTP/1 message. first_ev/last_ev: the DataEvents that carried its
    first and (so far) last byte; the span takes timestamps and pid/tid from them.
    headers: the selected ones (_NAMES), the last of each name, decoded when
    first read (a response's usually never are)."""

    __slots__ = ("is_request", "method", "path", "query", "target", "version", "status",
                 "_headers", "_raw", "_seen", "_vs", "_ve", "content_length", "chunked",
                 "close", "truncated", "first_ev", "last_ev", "ctx")

    def __init__(self, is_request: bool, first_ev: DataEvent) -> None:
        self._init(is_request, first_ev)

    def _init(self, is_request: bool, first_ev: DataEvent) -> None:
        self.is_request = is_request
        self.method = ""
        self.path = ""
        self.query = ""
        self.target = ""
        self.version = ""
        self.status = 0
        self._headers: dict[str, str] | None = None
        self._raw = b""  # the head's bytes: value k is _raw[_vs[k]:_ve[k]] if bit k of _seen
        self._seen = 0
        if not cython.compiled:
            self._vs = [0] * len(_NAMES)  # C arrays when compiled
            self._ve = [0] * len(_NAMES)
        self.content_length = -1  # -1: absent
        self.chunked = False
        self.close = False
        self.truncated = False
        self.first_ev = first_ev
        self.last_ev = first_ev
        self.ctx = None  # correlate.Context of a request, set when its head is parsed

    @property
    def headers(self) -> dict[str, str]:
        return self._headers_dict()

    def _headers_dict(self) -> dict[str, str]:
        h = self._headers
        if h is None:
            h = self._headers = {}
            for k in range(len(_NAMES)):
                if self._seen >> k & 1:
                    h[_NAMES[k]] = self._value(k)
        return h

    def _value(self, k: int) -> str:
        return self._raw[self._vs[k]:self._ve[k]].decode("latin-1")

    def __repr__(self) -> str:
        if self.is_request:
            return f"<Request {self.method} {self.target} HTTP/{self.version}>"
        return f"<Response {self.status} HTTP/{self.version}>"


@cython.cclass
class Listener:
    """What a parser tells its owner (Http1Session, or a test recorder). The
    owner subclasses it: compiled, the parser's calls are then C calls."""

    __slots__ = ()

    def on_head(self, parser: Http1Parser, msg: Message) -> None:
        raise NotImplementedError

    def on_end(self, parser: Http1Parser, msg: Message) -> None:
        raise NotImplementedError

    def on_malformed(self, parser: Http1Parser, nbytes: int) -> None:
        raise NotImplementedError

    def request_method(self) -> str | None:
        """Method of the request the next response answers (HEAD has no body)."""
        return None


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
        if state == _LOST:
            if not self._resync(ev):
                return
            state = _HEAD
        elif state == _DEAD:
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
            if state == _BODY or state == _CHUNK_DATA:
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
                if state == _BODY:
                    self.state = state = _HEAD
                    self.cur = None
                    self.listener.on_end(self, cur)
                    if self.state != _HEAD:  # the listener stopped us (upgrade)
                        return
                else:
                    self.state = state = _CHUNK_SIZE
            elif state == _HEAD:
                pos = self._head(ev, data, pos, cap, size)
                state = self.state
                if state >= _LOST:
                    return
            elif state == _CHUNK_SIZE:
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
                    n = min(int(digits, 16), _MAX_LENGTH)
                except ValueError:
                    n = -1
                if n < 0 or not digits.isalnum():  # isalnum: no "_", "+", spaces
                    self._malformed(size - pos)
                    return
                pos = nl + 2
                if n:
                    self.remaining = n + 2  # the CRLF after the data rides along
                    self.state = state = _CHUNK_DATA
                else:
                    self.state = state = _TRAILER
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
                self.state = state = _HEAD
                self._end_cur()
                if self.state != _HEAD:
                    return

    def _end_cur(self) -> None:
        cur = self.cur
        self.cur = None
        self.state = _HEAD
        self.listener.on_end(self, cur)

    def _head(self, ev: DataEvent, data: bytes, pos: int, cap: int, size: int) -> int:
        """Parse a head starting at pos; returns the position after it."""
        if pos >= cap:
            # the next message starts inside the gap: it is lost whole
            self.stats.truncated_messages += 1
            self.stats.unparsed_bytes += size - pos
            self.state = _LOST
            return size
        # tolerate stray CRLFs between messages (RFC 9112 2.2)
        while pos + 1 < cap and data[pos] == 13 and data[pos + 1] == 10:
            pos += 2
            if pos >= cap:
                if pos < size:
                    self.state = _LOST
                    self.stats.unparsed_bytes += size - pos
                return size
        end = _head_end(data, pos, cap)
        if end < 0:
            if cap == size and cap - pos <= MAX_HEAD:
                # no gap: the head continues in the next syscall
                if not self._plausible(data, pos, cap):
                    self._malformed(size - pos)
                    return size
                if self.buf_ev is None:
                    self.buf_ev = ev
                self.buf = data[pos:cap]
                return size
            first = ev if self.buf_ev is None else self.buf_ev
            self.buf_ev = None
            msg = self._parse_head(data, pos, cap, first, True)
            if msg is None:
                self._malformed(size - pos)
                return size
            msg.last_ev = ev
            self.stats.truncated_messages += 1
            self.cur = msg
            self.state = _LOST
            self.listener.on_head(self, msg)
            return size
        first = ev if self.buf_ev is None else self.buf_ev
        self.buf_ev = None
        msg = self._parse_head(data, pos, end, first, False)
        if msg is None:
            self._malformed(size - pos)
            return size
        msg.last_ev = ev
        pos = end + 4
        listener = self.listener
        listener.on_head(self, msg)
        if self.state != _HEAD:  # the listener stopped us
            return size
        if self.is_request:
            if msg.chunked:
                self.cur = msg
                self.state = _CHUNK_SIZE
            elif msg.content_length > 0:
                self.cur = msg
                self.remaining = msg.content_length
                self.state = _BODY
            else:
                listener.on_end(self, msg)
            return pos
        status = msg.status
        method = listener.request_method()
        if status < 200 or status == 204 or status == 304 or method == "HEAD":
            listener.on_end(self, msg)
        elif msg.chunked:
            self.cur = msg
            self.state = _CHUNK_SIZE
        elif msg.content_length >= 0:
            if msg.content_length:
                self.cur = msg
                self.remaining = msg.content_length
                self.state = _BODY
            else:
                listener.on_end(self, msg)
        else:
            # delimited by close (RFC 9112 6.3): end unknown, like lost framing
            self.cur = msg
            self.state = _LOST
        return pos

    def _parse_head(self, data: bytes, pos: int, end: int, ev: DataEvent,
                    truncated: bool) -> Message | None:
        """The head in data[pos:end], split into lines at CRLF; a truncated
        head's last line may be cut mid-way and is dropped, unless it is the
        start line."""
        if pos < 0 or pos > end or end > len(data):
            return None
        le = _line_end(data, pos, end)  # the start line is data[pos:le]
        msg = Message.__new__(Message)  # without the generic call of Message(...)
        msg._init(self.is_request, ev)
        msg.truncated = truncated
        if self.is_request:
            sp = _find(data, pos, le, 32)
            if sp <= pos or not _upper_alpha(data, pos, sp):
                return None
            method = _method(data, pos, sp - pos)
            sp2 = _rfind(data, pos, le, 32)
            if sp2 > sp and _startswith(data, sp2 + 1, le, b"HTTP/1."):
                ts, te = sp + 1, sp2
                msg.version = _version(data, sp2 + 6, le)
            elif truncated and (le == end or _line_end(data, le + 2, end) == end):
                ts, te = sp + 1, le  # the capture cut the request line itself
            else:
                return None
            msg.method = method
            if _startswith(data, ts, te, b"http"):
                # absolute-form (proxies): keep the path part only
                slashes = data.find(b"//", ts, te)
                slash = _find(data, slashes + 2, te, 47) if slashes >= 0 else -1
                ts = slash
            if ts < 0:
                msg.target = msg.path = "/"
            else:
                msg.target = target = data[ts:te].decode("latin-1")
                q = _find(data, ts, te, 63)  # "?"
                if q < 0:
                    msg.path = target
                else:
                    msg.path = target[:q - ts]
                    msg.query = target[q - ts + 1:]
        else:
            if le - pos < 12 or not _startswith(data, pos, le, b"HTTP/1.") \
                    or data[pos + 8] != 32 or (le - pos > 12 and data[pos + 12] != 32):
                return None
            d0 = data[pos + 9] - 48
            d1 = data[pos + 10] - 48
            d2 = data[pos + 11] - 48
            if not (0 <= d0 <= 9 and 0 <= d1 <= 9 and 0 <= d2 <= 9):
                return None
            msg.status = d0 * 100 + d1 * 10 + d2
            msg.version = _version(data, pos + 5, pos + 8)
        msg._raw = data
        seen = 0
        # where the last value of each framing header is (the one headers keeps)
        cl_s = cl_e = te_s = te_e = co_s = co_e = -1
        i = le + 2
        while i < end:
            # the line data[i:e], its first colon c and the index k of its name
            # in _NAMES; as plain Python, bytes methods beat calls of the scans
            if cython.compiled:
                e = _line_end(data, i, end)
                c = _find(data, i, e, 58)  # ":"
                k = _match(data, i, c - i, _NAME_TABLE, _NAME_START, _NAME_NUM)
            else:
                e = data.find(_CRLF, i, end)
                if e < 0:
                    e = end
                c = data.find(b":", i, e)
                k = _SELECT.get(data[i:c].lower(), -1) if c > i else -1
            if e == end and truncated:
                break  # the last line may be cut mid-way
            # k < 0 also for a line without a name and colon (obs-fold or
            # junk): ignored rather than failing the message
            if k >= 0:
                vs = c + 1
                ve = e
                # bytes.strip()
                while vs < ve and data[vs] in b" \t\n\r\x0b\x0c":
                    vs += 1
                while ve > vs and data[ve - 1] in b" \t\n\r\x0b\x0c":
                    ve -= 1
                seen |= 1 << k
                msg._vs[k] = vs
                msg._ve[k] = ve
                if k == _K_CONTENT_LENGTH:
                    cl_s, cl_e = vs, ve
                elif k == _K_TRANSFER_ENCODING:
                    te_s, te_e = vs, ve
                elif k == _K_CONNECTION:
                    co_s, co_e = vs, ve
            i = e + 2
        msg._seen = seen
        if te_s >= 0:
            msg.chunked = _iendswith(data, te_s, te_e, b"chunked")
        elif cl_s >= 0:
            n = _digits(data, cl_s, cl_e)
            if n < 0:
                # "5, 5": duplicates are allowed if equal (RFC 9110 8.6)
                vals = {v.strip() for v in msg._value(_K_CONTENT_LENGTH).split(",")}
                if len(vals) != 1 or not _is_digits(cl := vals.pop()):
                    return None
                n = min(int(cl), _MAX_LENGTH)
            msg.content_length = n
        if co_s >= 0:
            msg.close = _icontains(data, co_s, co_e, b"close")
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
        self.state = _LOST

    def _resync(self, ev: DataEvent) -> bool:
        """LOST: True if this syscall starts a new message (parse it normally)."""
        data = ev.payload
        soft = self.soft
        self.soft = False
        if is_request_start(data) if self.is_request else is_response_start(data):
            self.state = _HEAD
            if self.cur is not None:
                self._end_cur()
                return self.state == _HEAD
            return True
        cur = self.cur
        if cur is None:
            if soft and self._plausible(data, 0, len(data)):
                # the other direction ended our message: the next byte is most
                # likely a new head, even one split after its first bytes
                self.state = _HEAD
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
        if self.state == _LOST and self.cur is not None:
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
        self.state = _DEAD
        self.cur = None
        self.buf = b""
        self.buf_ev = None

    @property
    def busy(self) -> bool:
        """A message is under way (head buffered or body unfinished)."""
        return bool(self.buf) or self.cur is not None
