"""JSON lines: one span object per line (contract 1, schema 1), the default output."""

from __future__ import annotations

import io
import json
import sys

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class JsonlWriter:
    """Writes spans to a file or stdout ('-'), buffered; flush() makes them visible."""

    def __init__(self, target: str):
        self.target = target
        if target == "-":
            self._f: io.TextIOBase = sys.stdout
            self._own = False
        else:
            self._f = open(target, "w", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
            self._own = True
        self.written = 0

    def __call__(self, span) -> None:
        self._f.write(_dumps(span.to_dict()))
        self._f.write("\n")
        self.written += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._f.close()
