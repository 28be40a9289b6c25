"""Synthetic event streams for the pure layers (no root, no kernel).

A Conversation produces the OpenEvent/DataEvent/CloseEvent sequence the kernel
side would submit for one connection, honouring capture_bytes: each DataEvent
carries `size` = bytes moved and only the first capture_bytes as payload.
Timestamps come from a Clock (shareable between conversations so events of
several connections interleave in time order).

    clock = Clock()
    c = Conversation(clock, conn_id=7, role=ROLE_SERVER)
    c.open()
    req_evs = c.request(http_request("GET", "/a"))
    resp_evs = c.response(http_response(200, body=b"hi"))
    c.close()
    table_feed(table, c.events)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tracer.events import (
    AF_INET,
    CloseEvent,
    ConnRole,
    DataDir,
    DataEvent,
    OpenEvent,
    SysKind,
)

ROLE_UNKNOWN = int(ConnRole.ROLE_UNKNOWN)
ROLE_SERVER = int(ConnRole.ROLE_SERVER)
ROLE_CLIENT = int(ConnRole.ROLE_CLIENT)
INGRESS = int(DataDir.DIR_INGRESS)
EGRESS = int(DataDir.DIR_EGRESS)


def http_request(method: str = "GET", target: str = "/", headers: dict | None = None,
                 body: bytes = b"", *, version: str = "1.1", chunked: bool = False,
                 chunk_size: int = 1000, host: str | None = "svc.test") -> bytes:
    """Raw request bytes; Content-Length (or chunked framing) is added for a body."""
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    return _finish(lines, body, chunked, chunk_size, body_needs_length=bool(body))


def http_response(status: int = 200, headers: dict | None = None, body: bytes = b"", *,
                  version: str = "1.1", chunked: bool = False, chunk_size: int = 1000,
                  length: bool = True, reason: str = "X") -> bytes:
    """Raw response bytes. length=False: no Content-Length (close-delimited,
    or a bodiless status)."""
    lines = [f"HTTP/{version} {status} {reason}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    return _finish(lines, body, chunked, chunk_size, body_needs_length=length)


def _finish(lines: list[str], body: bytes, chunked: bool, chunk_size: int,
            body_needs_length: bool) -> bytes:
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        parts = [body[i:i + chunk_size] for i in range(0, len(body), chunk_size)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    elif body_needs_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Clock:
    """Monotonic fake ktime: each syscall takes syscall_ns, then gap_ns passes."""

    def __init__(self, t0: int = 1_000_000_000, syscall_ns: int = 2_000,
                 gap_ns: int = 10_000) -> None:
        self.t = t0
        self.syscall_ns = syscall_ns
        self.gap_ns = gap_ns

    def syscall(self) -> tuple[int, int]:
        enter = self.t
        exit_ = enter + self.syscall_ns
        self.t = exit_ + self.gap_ns
        return enter, exit_

    def advance(self, ns: int) -> None:
        self.t += ns


class Conversation:
    """Events of one connection, as the kernel would report them."""

    def __init__(self, clock: Clock | None = None, conn_id: int = 1, role: int = ROLE_SERVER,
                 capture_bytes: int = 512, *, pid: int = 1000, tid: int = 1001,
                 comm: str = "app", laddr: str = "10.0.0.1", lport: int = 8080,
                 raddr: str = "10.0.0.2", rport: int = 40000, netns: int = 4026532000,
                 cgroup_id: int = 4242, max_syscall: int = 65536) -> None:
        self.clock = clock or Clock()
        self.conn_id = conn_id
        self.role = role
        self.capture_bytes = capture_bytes
        self.pid, self.tid, self.comm = pid, tid, comm
        self.laddr, self.lport, self.raddr, self.rport = laddr, lport, raddr, rport
        self.netns, self.cgroup_id = netns, cgroup_id
        self.max_syscall = max_syscall
        self.events: list = []

    # ---- lifecycle ----

    def open(self) -> OpenEvent:
        _, ts = self.clock.syscall()
        ev = OpenEvent(self.conn_id, self.pid, self.tid, 5, self.role, ts, self.cgroup_id,
                       self.netns, AF_INET, self.laddr, self.lport, self.raddr, self.rport,
                       self.comm)
        self.events.append(ev)
        return ev

    def close(self) -> CloseEvent:
        _, ts = self.clock.syscall()
        ev = CloseEvent(self.conn_id, self.pid, self.tid, 5, self.role, ts)
        self.events.append(ev)
        return ev

    # ---- data ----

    def syscall(self, direction: int, data: bytes, size: int | None = None,
                tid: int | None = None) -> DataEvent:
        """One syscall moving `data` (size defaults to len(data)); the payload is
        cut to capture_bytes as the kernel does."""
        enter, exit_ = self.clock.syscall()
        n = len(data) if size is None else size
        sysk = SysKind.SYS_READ if direction == INGRESS else SysKind.SYS_WRITE
        ev = DataEvent(self.conn_id, self.pid, self.tid if tid is None else tid, 5, self.role,
                       direction, int(sysk), enter, exit_, n, bytes(data[:self.capture_bytes]),
                       self.comm)
        self.events.append(ev)
        return ev

    def send(self, direction: int, data: bytes, splits: Sequence[int] | None = None,
             tid: int | None = None) -> list[DataEvent]:
        """Move `data` in syscalls: cut at the given offsets, and at most
        max_syscall bytes each."""
        cuts = sorted({c for c in (splits or ()) if 0 < c < len(data)})
        bounds = [0, *cuts, len(data)]
        out = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            for s in range(a, b, self.max_syscall):
                out.append(self.syscall(direction, data[s:min(b, s + self.max_syscall)],
                                        tid=tid))
        return out

    @property
    def request_dir(self) -> int:
        # ROLE_UNKNOWN conversations are generated as servers that we joined late
        return EGRESS if self.role == ROLE_CLIENT else INGRESS

    @property
    def response_dir(self) -> int:
        return INGRESS if self.role == ROLE_CLIENT else EGRESS

    def request(self, data: bytes, splits: Sequence[int] | None = None,
                tid: int | None = None) -> list[DataEvent]:
        return self.send(self.request_dir, data, splits, tid)

    def response(self, data: bytes, splits: Sequence[int] | None = None,
                 tid: int | None = None) -> list[DataEvent]:
        return self.send(self.response_dir, data, splits, tid)

    def exchange(self, req: bytes, resp: bytes) -> tuple[list[DataEvent], list[DataEvent]]:
        return self.request(req), self.response(resp)


def expected_bounds(role: int, req_evs: list[DataEvent],
                    resp_evs: list[DataEvent]) -> tuple[int, int]:
    """(start ktime, end ktime) per the contract's latency rules."""
    first = req_evs[0]
    start = first.ts_enter if role == ROLE_CLIENT else first.ts_exit
    return start, resp_evs[-1].ts_exit


def merge(*convs: Conversation) -> list:
    """Events of several conversations sharing one Clock, in time order."""
    def key(ev):
        return ev.ts if not isinstance(ev, DataEvent) else ev.ts_exit
    return sorted((ev for c in convs for ev in c.events), key=key)


def feed(table, events: Iterable) -> None:
    for ev in events:
        table.handle(ev)
