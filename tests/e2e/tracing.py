"""Helpers for e2e tests: run the real tracer CLI and real servers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def server(argv: list[str], ready: bytes = b"ready", timeout: float = 15.0):
    """Start a server process, wait for its ready line, always kill it."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        line = b""
        while ready not in line:
            if time.monotonic() > deadline or p.poll() is not None:
                raise RuntimeError(f"server {argv} did not start: {p.stderr.read1(4096)!r}")
            line = p.stdout.readline()
        yield p
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()


def py_server(port: int, sleep_ms: int = 20):
    return server([sys.executable, str(HERE / "servers" / "py_server.py"), str(port),
                   str(sleep_ms)])


def node_server(port: int, sleep_ms: int = 20):
    return server(["node", str(HERE / "servers" / "server.js"), str(port), str(sleep_ms)])


class TracerRun:
    """`python -m tracer run ... --output FILE` as a user runs it; stop() sends
    SIGINT and reads the spans and the summary."""

    def __init__(self, tmp_path: Path, *args: str):
        self.out = tmp_path / "spans.jsonl"
        self.argv = [sys.executable, "-m", "tracer", "run", "--output", str(self.out), *args]
        self.proc: subprocess.Popen | None = None
        self.spans: list[dict] = []
        self.summary: dict = {}
        self.stderr = ""

    def __enter__(self) -> TracerRun:
        self.proc = subprocess.Popen(self.argv, stderr=subprocess.PIPE, text=True)
        first = self.proc.stderr.readline()
        if "tracer: tracing" not in first:
            self.proc.kill()
            raise RuntimeError(f"tracer did not start: {first}{self.proc.stderr.read()}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        time.sleep(0.3)  # let the last events reach the ring buffer
        self.proc.send_signal(signal.SIGINT)
        try:
            rest = self.proc.communicate(timeout=60)[1]
        finally:
            self.proc.kill()
        self.stderr = rest
        self.returncode = self.proc.returncode
        self.proc = None
        self.spans = [json.loads(line) for line in self.out.read_text().splitlines()]
        self.summary = json.loads(Path(str(self.out) + ".summary.json").read_text())

    def __exit__(self, *exc) -> None:
        self.stop()

    def by(self, kind: str, pid: int | None = None) -> list[dict]:
        spans = [s for s in self.spans if s["kind"] == kind and (pid is None or s["pid"] == pid)]
        return sorted(spans, key=lambda s: s["start_time_unix_nano"])
