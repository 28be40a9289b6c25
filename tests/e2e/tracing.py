"""Helpers for e2e tests: run the real tracer CLI and real servers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

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


@contextlib.contextmanager
def held(argv: list[str], timeout: float = 60.0):
    """Run a client that prints "done" when its work is over and exits 0 at
    stdin EOF (tests/cprogs/span_client.c with "hold"): returns once it is
    done; it exits when the block ends. For checks that need the process to
    outlive the tracer's handling of its spans (stacks are symbolized from
    its /proc maps)."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        out = p.stdout.readline()
        if out != b"done\n":
            raise RuntimeError(f"{argv[0]} not done: {out!r} {p.stderr.read1(4096)!r}")
        yield p
        p.stdin.close()
        if p.wait(timeout) != 0:
            raise RuntimeError(f"{argv[0]} exited {p.returncode}: {p.stderr.read()!r}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()


def uprobe_files(pid: int) -> set[str]:
    """Files probed by the BPF uprobe links that pid and its children hold,
    from their fdinfo (`path:` of uprobe_multi links, `name:` of perf-event
    uprobes), resolved."""
    files = set()
    procs = [psutil.Process(pid)]
    with contextlib.suppress(psutil.NoSuchProcess):
        procs += procs[0].children(recursive=True)
    for p in procs:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{p.pid}/fdinfo"):
                with contextlib.suppress(OSError):
                    info = dict(line.split(":\t", 1) for line in
                                Path(f"/proc/{p.pid}/fdinfo/{fd}").read_text().splitlines()
                                if ":\t" in line)
                    kind = info.get("link_type", "") + info.get("event_type", "")
                    target = info.get("path") or info.get("name")
                    if target and "uprobe" in kind:
                        files.add(os.path.realpath(target))
    return files


def wait_uprobes_on(pid: int, path: str, timeout: float = 20.0) -> None:
    """Until the tracer (pid, its broker) holds uprobe links on path: a
    process started after the tracer is attached to on a later housekeeping
    tick."""
    path = os.path.realpath(path)
    deadline = time.monotonic() + timeout
    while path not in uprobe_files(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"no uprobe on {path} within {timeout} s: {uprobe_files(pid)}")
        time.sleep(0.1)


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
        # warnings (one line each) may come before the ready line
        self.before = []
        for _ in range(20):
            line = self.proc.stderr.readline()
            if "tracer: tracing" in line or not line:
                break
            self.before.append(line)
        if "tracer: tracing" not in line:
            self.proc.kill()
            raise RuntimeError(f"tracer did not start: {''.join(self.before)}{line}"
                               f"{self.proc.stderr.read()}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        time.sleep(0.3)  # let the last events reach the ring buffer
        self.proc.send_signal(signal.SIGINT)
        # through the text wrapper (readline() above may have buffered more),
        # in a thread so that a hung tracer still times out
        rest: list[str] = []
        reader = threading.Thread(target=lambda: rest.append(self.proc.stderr.read()))
        reader.start()
        try:
            self.proc.wait(timeout=60)
        finally:
            self.proc.kill()
            reader.join(10)
            self.proc.stderr.close()
        self.stderr = "".join(self.before) + "".join(rest)
        self.returncode = self.proc.returncode
        self.proc = None
        self.spans = [json.loads(line) for line in self.out.read_text().splitlines()]
        self.summary = json.loads(Path(str(self.out) + ".summary.json").read_text())

    def __exit__(self, *exc) -> None:
        self.stop()

    def by(self, kind: str, pid: int | None = None) -> list[dict]:
        spans = [s for s in self.spans if s["kind"] == kind and (pid is None or s["pid"] == pid)]
        return sorted(spans, key=lambda s: s["start_time_unix_nano"])
