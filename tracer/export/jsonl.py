"""JSON lines: one span object per line (contract 1, schema 1), the default output.

orjson encodes a span in ~0.4 µs against ~4 µs for the standard library: this
runs once per span on the agent's only thread.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

import orjson

_dumps = orjson.dumps


class JsonlWriter:
    """Writes spans to a file or stdout ('-'), buffered; flush() makes them visible."""

    def __init__(self, target: str):
        self.target = target
        if target == "-":
            self._f: BinaryIO = sys.stdout.buffer
            self._own = False
        else:
            self._f = open(target, "wb", buffering=1 << 16)  # noqa: SIM115
            self._own = True
        self.written = 0

    def __call__(self, span) -> None:
        self._f.write(_dumps(span.to_dict()) + b"\n")
        self.written += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._f.close()
