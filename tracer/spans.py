# cython: annotation_typing=False
"""The span model (contract 1 of ARCHITECTURE.md), ids, trace context and the
HTTP/1 request/response -> span step with the latency rules.

Latency rules (contract):
- server span (request ingress, response egress): start = ts_exit of the read
  that returned the request's first byte (a blocking read's entry is not the
  request's arrival); end = ts_exit of the write that sent the response's last
  byte.
- client span (request egress, response ingress): start = ts_enter of the first
  write of the request; end = ts_exit of the read that returned the response's
  last byte.
The raw ktimes stay on the Span (req_*/resp_* fields) for the correlation stage.
"""

from __future__ import annotations

import cython

from tracer.connstate import Conn
from tracer.events import ConnRole
from tracer.protocols.http1 import Message

SCHEMA = 1
_ROLE_SERVER = int(ConnRole.ROLE_SERVER)


# A span refers to no context or other span (no cycle to collect), and one
# is made per request: compiled, it is not GC-tracked and reuses freed memory.
@cython.no_gc
@cython.freelist(64)
@cython.cclass
class Span:
    """One request/response exchange seen from one process.

    Compiled, a cdef class (spans.pxd): the attributes below are its fields."""

    __slots__ = (
        "trace_id", "span_id", "parent_span_id", "kind", "protocol",
        "method", "path", "query", "status", "version",
        "start_ktime", "end_ktime", "clock_offset_ns",
        "pid", "tid", "comm", "netns", "cgroup_id",
        "local_addr", "local_port", "peer_addr", "peer_port", "tls",
        "correlation_source", "correlation_confidence",
        "request_headers", "conn_id",
        # raw ktimes of the syscalls that bound the exchange (correlation stage)
        "req_first_enter", "req_first_exit", "req_last_exit",
        "resp_first_enter", "resp_first_exit", "resp_last_enter", "resp_last_exit",
        "resp_tid",
        "attributes_extra",  # extra attributes a later stage wants exported
        "stack_id",  # --span-stacks: 1 + user stack id at request start (0: none)
        "stack",  # --span-stacks: the symbolised frames, set just before the sink
    )

    def __init__(self, **fields) -> None:
        # The slow, flexible constructor (tests, other protocols); the HTTP/1 hot
        # path builds spans through http1_span() instead.
        self.trace_id = ""
        self.span_id = ""
        self.parent_span_id = None
        self.kind = "server"
        self.protocol = "http1"
        self.method = ""
        self.path = ""
        self.query = ""
        self.status = 0
        self.version = "1.1"
        self.start_ktime = self.end_ktime = self.clock_offset_ns = 0
        self.pid = self.tid = self.netns = self.cgroup_id = 0
        self.comm = ""
        self.local_addr = self.peer_addr = ""
        self.local_port = self.peer_port = 0
        self.tls = False
        self.correlation_source = "none"
        self.correlation_confidence = 0.0
        self.request_headers = {}
        self.conn_id = 0
        self.req_first_enter = self.req_first_exit = self.req_last_exit = 0
        self.resp_first_enter = self.resp_first_exit = 0
        self.resp_last_enter = self.resp_last_exit = 0
        self.resp_tid = 0
        self.attributes_extra = None
        self.stack_id = 0
        self.stack = None
        for k, v in fields.items():
            setattr(self, k, v)

    @property
    def start_time_unix_nano(self) -> int:
        return self.start_ktime + self.clock_offset_ns

    @property
    def duration_ns(self) -> int:
        d = self.end_ktime - self.start_ktime
        return d if d > 0 else 0

    def _endpoints(self) -> tuple:
        """(server address, server port, client address) of the attributes."""
        host = self.request_headers.get("host")
        if host:
            hp = _HOSTS.get(host)
            if hp is None:
                if len(_HOSTS) >= _HOSTS_MAX:
                    _HOSTS.clear()
                hp = _HOSTS[host] = _split_host(host)
            host_name, host_port = hp
        else:
            host_name, host_port = "", 0
        if self.kind == "server":
            return (host_name or self.local_addr, self.local_port or host_port, self.peer_addr)
        return (host_name or self.peer_addr, self.peer_port or host_port, self.local_addr)

    def attributes(self) -> dict:
        # the same keys in the same order as write_json's _attributes_json
        hdrs = self.request_headers
        srv_addr, srv_port, client = self._endpoints()
        a = {"http.request.method": self.method, "url.path": self.path}
        if self.query:
            a["url.query"] = self.query
        a["http.response.status_code"] = self.status
        if srv_addr:
            a["server.address"] = srv_addr
        if srv_port:
            a["server.port"] = srv_port
        if client:
            a["client.address"] = client
        ua = hdrs.get("user-agent")
        if ua:
            a["user_agent.original"] = ua
        rid = hdrs.get("x-request-id")
        if rid:
            a["http.request.header.x-request-id"] = rid
        if self.version:
            a["network.protocol.version"] = self.version
        if self.attributes_extra:
            a.update(self.attributes_extra)
        return a

    def to_dict(self) -> dict:
        """Exactly the contract schema (version 1); `stack` only with --span-stacks."""
        dur = self.end_ktime - self.start_ktime  # as the properties, without their lookup
        d = {
            "schema": SCHEMA,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "kind": self.kind,
            "protocol": self.protocol,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "start_time_unix_nano": self.start_ktime + self.clock_offset_ns,
            "duration_ns": dur if dur > 0 else 0,
            "pid": self.pid,
            "tid": self.tid,
            "comm": self.comm,
            "netns": self.netns,
            "cgroup_id": self.cgroup_id,
            "local_addr": self.local_addr,
            "local_port": self.local_port,
            "peer_addr": self.peer_addr,
            "peer_port": self.peer_port,
            "tls": self.tls,
            "attributes": self.attributes(),
            "correlation": {
                "source": self.correlation_source,
                "confidence": self.correlation_confidence,
            },
        }
        if self.stack:
            d["stack"] = self.stack
        return d

    def write_json(self, buf: bytearray, pos: int) -> int:
        """to_dict() as one JSON line exactly as orjson writes it, straight into
        buf at pos, without the dicts (compiled only). Returns the new end; -1:
        no room in buf from pos on; -2: not written here (pure Python, or a
        value only orjson writes), so the caller encodes to_dict()."""
        if not cython.compiled:
            return -2
        p = PyByteArray_AS_STRING(buf)  # noqa: F821 (C, in spans.pxd)
        cap = len(buf)
        dur = self.end_ktime - self.start_ktime
        pos = _jraw(p, cap, pos, b'{"schema":1,"trace_id":')
        pos = _jval(p, cap, pos, self.trace_id, 0)
        pos = _jraw(p, cap, pos, b',"span_id":')
        pos = _jval(p, cap, pos, self.span_id, 0)
        pos = _jraw(p, cap, pos, b',"parent_span_id":')
        pos = _jval(p, cap, pos, self.parent_span_id, 0)
        pos = _jraw(p, cap, pos, b',"kind":')
        pos = _jval(p, cap, pos, self.kind, 0)
        pos = _jraw(p, cap, pos, b',"protocol":')
        pos = _jval(p, cap, pos, self.protocol, 0)
        pos = _jraw(p, cap, pos, b',"method":')
        pos = _jval(p, cap, pos, self.method, 0)
        pos = _jraw(p, cap, pos, b',"path":')
        pos = _jval(p, cap, pos, self.path, 0)
        pos = _jraw(p, cap, pos, b',"status":')
        pos = _jval(p, cap, pos, self.status, 0)
        pos = _jraw(p, cap, pos, b',"start_time_unix_nano":')
        pos = _jval(p, cap, pos, self.start_ktime + self.clock_offset_ns, 0)
        pos = _jraw(p, cap, pos, b',"duration_ns":')
        pos = _jval(p, cap, pos, dur if dur > 0 else 0, 0)
        pos = _jraw(p, cap, pos, b',"pid":')
        pos = _jval(p, cap, pos, self.pid, 0)
        pos = _jraw(p, cap, pos, b',"tid":')
        pos = _jval(p, cap, pos, self.tid, 0)
        pos = _jraw(p, cap, pos, b',"comm":')
        pos = _jval(p, cap, pos, self.comm, 0)
        pos = _jraw(p, cap, pos, b',"netns":')
        pos = _jval(p, cap, pos, self.netns, 0)
        pos = _jraw(p, cap, pos, b',"cgroup_id":')
        pos = _jval(p, cap, pos, self.cgroup_id, 0)
        pos = _jraw(p, cap, pos, b',"local_addr":')
        pos = _jval(p, cap, pos, self.local_addr, 0)
        pos = _jraw(p, cap, pos, b',"local_port":')
        pos = _jval(p, cap, pos, self.local_port, 0)
        pos = _jraw(p, cap, pos, b',"peer_addr":')
        pos = _jval(p, cap, pos, self.peer_addr, 0)
        pos = _jraw(p, cap, pos, b',"peer_port":')
        pos = _jval(p, cap, pos, self.peer_port, 0)
        pos = _jraw(p, cap, pos, b',"tls":')
        pos = _jval(p, cap, pos, self.tls, 0)
        pos = _jraw(p, cap, pos, b',"attributes":')
        pos = self._attributes_json(p, cap, pos)
        pos = _jraw(p, cap, pos, b',"correlation":{"source":')
        pos = _jval(p, cap, pos, self.correlation_source, 0)
        pos = _jraw(p, cap, pos, b',"confidence":')
        pos = _jval(p, cap, pos, self.correlation_confidence, 0)
        if not self.stack:
            return _jraw(p, cap, pos, b'}}\n')
        pos = _jraw(p, cap, pos, b'},"stack":')
        pos = _jval(p, cap, pos, self.stack, 0)
        return _jraw(p, cap, pos, b'}\n')

    def _attributes_json(self, p, cap: int, pos: int) -> int:
        """attributes() written without the dict: the same keys in the same
        order. Extra attributes that replace standard ones go through it."""
        extra = self.attributes_extra
        if extra and not _STANDARD_ATTRS.isdisjoint(extra):
            return _jval(p, cap, pos, self.attributes(), 0)
        hdrs = self.request_headers
        srv_addr, srv_port, client = self._endpoints()
        pos = _jraw(p, cap, pos, b'{"http.request.method":')
        pos = _jval(p, cap, pos, self.method, 0)
        pos = _jraw(p, cap, pos, b',"url.path":')
        pos = _jval(p, cap, pos, self.path, 0)
        if self.query:
            pos = _jraw(p, cap, pos, b',"url.query":')
            pos = _jval(p, cap, pos, self.query, 0)
        pos = _jraw(p, cap, pos, b',"http.response.status_code":')
        pos = _jval(p, cap, pos, self.status, 0)
        if srv_addr:
            pos = _jraw(p, cap, pos, b',"server.address":')
            pos = _jval(p, cap, pos, srv_addr, 0)
        if srv_port:
            pos = _jraw(p, cap, pos, b',"server.port":')
            pos = _jval(p, cap, pos, srv_port, 0)
        if client:
            pos = _jraw(p, cap, pos, b',"client.address":')
            pos = _jval(p, cap, pos, client, 0)
        ua = hdrs.get("user-agent")
        if ua:
            pos = _jraw(p, cap, pos, b',"user_agent.original":')
            pos = _jval(p, cap, pos, ua, 0)
        rid = hdrs.get("x-request-id")
        if rid:
            pos = _jraw(p, cap, pos, b',"http.request.header.x-request-id":')
            pos = _jval(p, cap, pos, rid, 0)
        if self.version:
            pos = _jraw(p, cap, pos, b',"network.protocol.version":')
            pos = _jval(p, cap, pos, self.version, 0)
        if extra:
            for k, x in extra.items():
                if type(k) is not str:
                    return -2
                pos = _jraw(p, cap, pos, b",")
                pos = _jstr(p, cap, pos, k)
                pos = _jraw(p, cap, pos, b":")
                pos = _jval(p, cap, pos, x, 1)
        return _jraw(p, cap, pos, b"}")

    def __repr__(self) -> str:
        return (f"Span({self.kind} {self.method} {self.path} -> {self.status}, "
                f"{self.duration_ns} ns, pid={self.pid} conn={self.conn_id})")


# The pieces of Span.write_json (compiled only). Each returns the new end of
# what is written at p[pos:], or a negative pos unchanged (so a line is a plain
# sequence of calls), -1 when p[:cap] has no room for it, or -2 for a
# value orjson writes but these do not (any type but None, bool, str, int in
# 64 bits, float in plain notation, dict with str keys, list and tuple, nested
# at most 64 deep).

def _jraw(p, cap: int, pos: int, raw: bytes) -> int:
    if pos < 0:
        return pos
    n = len(raw)
    if pos + n > cap:
        return -1
    memcpy(p + pos, cython.cast(cython.p_char, raw), n)  # noqa: F821 (C, in spans.pxd)
    return pos + n


def _jstr(p, cap: int, pos: int, v: str) -> int:
    if pos < 0:
        return pos
    n = 0
    u = PyUnicode_AsUTF8AndSize(v, cython.address(n))  # noqa: F821 (C, in spans.pxd)
    if pos + 6 * n + 2 > cap:
        return -1
    p[pos] = 34  # '"'
    pos += 1 + _spans_json_escape(p + pos + 1, u, n)  # noqa: F821 (C, in spans.pxd)
    p[pos] = 34
    return pos + 1


def _jval(p, cap: int, pos: int, v, depth: int) -> int:
    if pos < 0:
        return pos
    if type(v) is str:
        return _jstr(p, cap, pos, v)
    if v is None:
        return _jraw(p, cap, pos, b"null")
    if v is True:
        return _jraw(p, cap, pos, b"true")
    if v is False:
        return _jraw(p, cap, pos, b"false")
    if type(v) is int:
        if pos + 21 > cap:
            return -1
        over = 0
        ll = PyLong_AsLongLongAndOverflow(v, cython.address(over))  # noqa: F821 (C, in spans.pxd)
        if over == 0:
            if ll < 0:
                p[pos] = 45  # '-'
                pos += 1
                u = cython.cast(cython.ulonglong, -(ll + 1)) + 1  # -ll without overflow
            else:
                u = ll
        elif over > 0 and v < (1 << 64):
            u = v
        else:
            return -2
        return pos + _spans_json_u64(p + pos, u)  # noqa: F821 (C, in spans.pxd)
    if type(v) is float:
        if v == 1.0:  # the usual confidences: no repr
            return _jraw(p, cap, pos, b"1.0")
        if v == 0.0 and not signbit(v):  # noqa: F821 (C, in spans.pxd)
            return _jraw(p, cap, pos, b"0.0")
        r = repr(v)  # the shortest round trip, as orjson's; its exponent form differs
        n = len(r)
        for i in range(n):
            c = r[i]
            if c != "." and c != "-" and not ("0" <= c <= "9"):
                return -2
        if pos + n > cap:
            return -1
        for i in range(n):
            p[pos + i] = r[i]
        return pos + n
    if depth >= 64:
        return -2
    if type(v) is dict:
        d = cython.cast(dict, v)
        pos = _jraw(p, cap, pos, b"{")
        first = True
        for k, x in d.items():
            if type(k) is not str:
                return -2
            if not first:
                pos = _jraw(p, cap, pos, b",")
            first = False
            pos = _jstr(p, cap, pos, k)
            pos = _jraw(p, cap, pos, b":")
            pos = _jval(p, cap, pos, x, depth + 1)
        return _jraw(p, cap, pos, b"}")
    if type(v) is list or type(v) is tuple:
        pos = _jraw(p, cap, pos, b"[")
        first = True
        for x in v:
            if not first:
                pos = _jraw(p, cap, pos, b",")
            first = False
            pos = _jval(p, cap, pos, x, depth + 1)
        return _jraw(p, cap, pos, b"]")
    return -2


# The keys attributes() writes itself: extra attributes may replace them
_STANDARD_ATTRS = frozenset((
    "http.request.method", "url.path", "url.query", "http.response.status_code",
    "server.address", "server.port", "client.address", "user_agent.original",
    "http.request.header.x-request-id", "network.protocol.version"))

# Host header -> _split_host(): few distinct values, one per span
_HOSTS: dict[str, tuple[str, int]] = {}
_HOSTS_MAX = 1024


def _split_host(host: str) -> tuple[str, int]:
    """'example.com:8080' -> ('example.com', 8080); '[::1]:80' -> ('::1', 80)."""
    if not host:
        return "", 0
    if host[0] == "[":
        end = host.find("]")
        if end < 0:
            return host, 0
        name, rest = host[1:end], host[end + 1:]
        port = rest[1:] if rest[:1] == ":" else ""
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() and len(port) <= 5 else 0


def exchange_span(conn: Conn, server: bool, first, req_last, rfirst, last,
                  clock_offset_ns: int) -> Span:
    """A span of one exchange with what every protocol fills the same way:
    the latency rules (module doc), the process and the connection. The
    syscall events: the request's first and last, the response's first and
    last. The caller sets the protocol's fields (hot path: no keyword init)."""
    s = Span.__new__(Span)
    s.trace_id = ""
    s.span_id = ""
    s.parent_span_id = None
    s.correlation_source = "none"
    s.correlation_confidence = 0.0
    s.kind = "server" if server else "client"
    s.start_ktime = first.ts_exit if server else first.ts_enter
    s.end_ktime = last.ts_exit
    s.clock_offset_ns = clock_offset_ns
    s.pid = first.pid
    s.tid = first.tid
    s.comm = first.comm
    s.netns = conn.netns
    s.cgroup_id = conn.cgroup_id
    s.local_addr = conn.laddr
    s.local_port = conn.lport
    s.peer_addr = conn.raddr
    s.peer_port = conn.rport
    s.tls = conn.tls
    s.conn_id = conn.conn_id
    s.req_first_enter = first.ts_enter
    s.req_first_exit = first.ts_exit
    s.req_last_exit = req_last.ts_exit
    s.resp_first_enter = rfirst.ts_enter
    s.resp_first_exit = rfirst.ts_exit
    s.resp_last_enter = last.ts_enter
    s.resp_last_exit = last.ts_exit
    s.resp_tid = last.tid
    s.attributes_extra = None
    s.stack_id = 0
    s.stack = None
    return s


def http1_span(conn: Conn, req: Message, resp: Message, clock_offset_ns: int) -> Span:
    """Pair one HTTP/1 request with its response."""
    first = req.first_ev
    s = exchange_span(conn, conn.role == _ROLE_SERVER, first, req.last_ev, resp.first_ev,
                      resp.last_ev, clock_offset_ns)
    s.protocol = "http1"
    s.method = req.method
    s.path = req.path
    s.query = req.query
    s.status = resp.status
    s.version = req.version or resp.version
    s.request_headers = req._headers_dict()
    s.stack_id = first.stack
    return s
