# cython: annotation_typing=False
"""One traced connection as seen by one process: the state the connection
table, the protocol sessions, span assembly and the correlator all read.

A leaf of the per-event core (it imports only the counters), so that each of
those modules can read a connection's fields directly when compiled (see
tracer/core.py: a module that cimports another runs from source with it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cython

from tracer.stats import Stats

if TYPE_CHECKING:
    from tracer.events import DataEvent


@cython.cclass
class Conn:
    """One traced socket. `table` is the ConnectionTable that owns it; `proto`
    its protocol slot (an object with on_data(ev) and on_close(eof)), set by
    the table."""

    __slots__ = ("conn_id", "role", "proto", "last_ts", "pid", "comm", "netns", "cgroup_id",
                 "laddr", "lport", "raddr", "rport", "table", "fresh", "tls")

    def __init__(self, table, conn_id: int, role: int) -> None:
        self.table = table
        self.conn_id = conn_id
        self.role = role
        self.last_ts = 0
        self.pid = 0
        self.comm = ""
        self.netns = 0
        self.cgroup_id = 0
        self.laddr = ""
        self.lport = 0
        self.raddr = ""
        self.rport = 0
        # seen from accept/connect: request order on it is known from the first
        # request, so it can be matched with the other end (correlation)
        self.fresh = False
        self.tls = False  # plaintext from TLS uprobes (data events with an SSL sys_kind)
        self.proto = None

    def give_up(self, counted: bool) -> None:
        """Stop parsing this connection for good; counted: as not-HTTP."""
        if counted:
            stats = self.table.stats
            stats.unparsed_connections += 1
            self.proto = _Unparsed(stats)
        else:
            self.proto = _IGNORED

    def __repr__(self) -> str:
        return (f"<Conn {self.conn_id} role={self.role} {self.laddr}:{self.lport}"
                f" <-> {self.raddr}:{self.rport} {type(self.proto).__name__}>")


class _Ignored:
    """A connection we deliberately do not parse (upgraded)."""

    __slots__ = ()

    def on_data(self, ev: DataEvent) -> None:
        pass

    def on_close(self, eof: bool) -> None:
        pass


_IGNORED = _Ignored()


class _Unparsed:
    """Given up as not-HTTP: only count the bytes (cheap)."""

    __slots__ = ("stats",)

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def on_data(self, ev: DataEvent) -> None:
        self.stats.unparsed_bytes += ev.size

    def on_close(self, eof: bool) -> None:
        pass
