"""Ground truth written by the workload servers themselves, one JSON object per line.

A record is written per request handled (``kind="server"``) and per downstream
call made (``kind="client"``), with the ``x-request-id`` and ``traceparent``
received and sent and the server's own start/end wall-clock times. The harness
scores the tracer's spans against these records.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace_id, parent_span_id) from a W3C traceparent, or None if absent/invalid."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    return (m.group(1), m.group(2)) if m else None


def make_traceparent(trace_id: str | None = None, span_id: str | None = None) -> str:
    return f"00-{trace_id or secrets.token_hex(16)}-{span_id or secrets.token_hex(8)}-01"


def now_ns() -> int:
    return time.time_ns()


class GroundTruthLog:
    """Append-only JSON-lines log, safe across threads and across processes.

    Each record is one ``os.write`` on an ``O_APPEND`` descriptor, so lines from
    several gunicorn workers never interleave. ``buffered=True`` batches lines
    in memory (for the stress server, where a syscall per request would be
    the bottleneck); call ``flush()`` before exit.
    """

    def __init__(self, path: str | os.PathLike, service: str, *, buffered: bool = False,
                 batch: int = 256) -> None:
        self.service = service
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._buffered = buffered
        self._batch = batch
        self._pending: list[str] = []

    def record(self, *, kind: str, request_id: str | None, method: str, path: str,
               status: int | None, start_ns: int, end_ns: int,
               traceparent_in: str | None = None, traceparent_out: str | None = None,
               peer: str | None = None, protocol: str = "http1", **extra) -> None:
        rec = {
            "service": self.service, "kind": kind, "protocol": protocol,
            "request_id": request_id, "method": method, "path": path, "status": status,
            "start_unix_ns": start_ns, "end_unix_ns": end_ns,
            "traceparent_in": traceparent_in, "traceparent_out": traceparent_out,
            "peer": peer, "pid": os.getpid(), "tid": threading.get_native_id(), **extra,
        }
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self._lock:
            if self._buffered:
                self._pending.append(line)
                if len(self._pending) >= self._batch:
                    self._flush_locked()
            else:
                os.write(self._fd, line.encode())

    def _flush_locked(self) -> None:
        if self._pending:
            os.write(self._fd, "".join(self._pending).encode())
            self._pending.clear()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def read_log(path: str | os.PathLike, contains: str | None = None) -> Iterator[dict]:
    """Records from a ground-truth file; a torn last line (killed writer) is skipped.
    ``contains``: only lines holding this text are parsed (cheap per-run filter)."""
    p = Path(path)
    if not p.exists():
        return
    with p.open() as fh:
        for line in fh:
            line = line.strip()
            if not line or (contains is not None and contains not in line):
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
