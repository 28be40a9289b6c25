"""Peers: other tracers run by the harness beside ours, on the same load.

A peer is a command that behaves like `tracer run` for the harness: it prints
a stderr line containing "tracer: tracing" once attached, stops on SIGINT,
and writes OUTPUT.summary.json with `events_seen`, `events_dropped` and
`request_lines` (what it captured, for recall). `prepare(name)` sets it up
(idempotently) and returns a `Peer`, or raises `PeerUnavailable` whose text
is the one-line reason the harness reports as the peer's skip.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.peers.setup import PeerUnavailable, prepare_bcc

HERE = Path(__file__).resolve().parent
__all__ = ["PEERS", "Peer", "PeerUnavailable", "prepare"]


@dataclass
class Peer:
    name: str
    argv: list[str]  # the program, before scope and output options
    env: dict[str, str]
    version: str = ""
    notes: list[str] = field(default_factory=list)

    def command(self, pids: list[int], output: Path) -> list[str]:
        """Scope: these processes and their descendants at start."""
        return [*self.argv, "--pid", ",".join(str(p) for p in pids), "--output", str(output)]

    def tracer_cmd(self) -> str:
        """A `harness bench --tracer-cmd` template running this peer."""
        extra = {k: v for k, v in self.env.items() if k.startswith("BCC_")}
        prefix = ["env", *(f"{k}={v}" for k, v in sorted(extra.items()))] if extra else []
        return " ".join(shlex.quote(a) for a in [*prefix, *self.argv]) + \
            " --pid {pids} --output {output}"

    @staticmethod
    def read_summary(output: Path) -> dict:
        return json.loads(Path(f"{output}.summary.json").read_text())


def _bcc(install: bool) -> Peer:
    env = prepare_bcc(install=install)
    return Peer("bcc", [env.python, str(HERE / "bcc_http.py")], env.env(),
                version=f"bcc {env.bcc_version}, headers {env.headers.name}", notes=env.notes)


PEERS: dict[str, Callable[[bool], Peer]] = {"bcc": _bcc}


def prepare(name: str, install: bool = True) -> Peer:
    if name not in PEERS:
        raise PeerUnavailable(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    return PEERS[name](install)
