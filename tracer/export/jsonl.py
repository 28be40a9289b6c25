# cython: annotation_typing=False
"""JSON lines: one span object per line (contract 1, schema 1), the default output.

A compiled span writes its own line (Span.write_json, the same bytes as
orjson's encoding of Span.to_dict, without building the dicts); orjson encodes
the rest. This runs once per span on the agent's only thread. The lines are
gathered in one fixed buffer, reused for the whole run, and written a batch at
a time: no write call per span, and no memory taken and given back per batch.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import BinaryIO

import cython
import orjson

_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE  # the line's "\n" without a copy of the line
BATCH_BYTES = 1 << 18  # a write per this much; flush() writes what is left


class JsonlWriter:
    """Writes spans to a file or stdout ('-'), batched; flush() makes them visible
    (the run loop calls it each housekeeping tick, close() at exit)."""

    def __init__(self, target: str, batch_bytes: int = BATCH_BYTES):
        self.target = target
        if target == "-":
            self._f: BinaryIO = sys.stdout.buffer
            self._own = False
        else:
            self._f = open(target, "wb", buffering=1 << 16)  # noqa: SIM115
            self._own = True
        self._buf = bytearray(max(batch_bytes, 1))
        self._pos = 0
        self.written = 0
        # A span file is written once and read later, if at all: its pages are
        # dropped from the page cache behind the writer (docs/performance.md)
        self._fd = -1
        self._end = self._advised = 0
        try:
            fd = self._f.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self._fd = fd
                self._end = self._advised = os.lseek(fd, 0, os.SEEK_CUR)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass  # not a file (a pipe, a terminal, a test's stream)

    @cython.locals(line=bytes, n=cython.Py_ssize_t, pos=cython.Py_ssize_t)
    def __call__(self, span) -> None:
        # the compiled span writes its own line into the batch (no dicts, no
        # bytes object); -1: no room left, -2: one of its values is orjson's
        pos = span.write_json(self._buf, self._pos)
        if pos == -1 and self._pos:
            self._drain()
            pos = span.write_json(self._buf, 0)
        if pos >= 0:
            self._pos = pos
            self.written += 1
            return
        line = _dumps(span.to_dict(), option=_NEWLINE)
        n = len(line)
        pos = self._pos
        if pos + n > len(self._buf):
            self._drain()
            pos = 0
            if n > len(self._buf):  # a span larger than a batch goes alone
                self._f.write(line)
                self.written += 1
                return
        self._buf[pos:pos + n] = line
        self._pos = pos + n
        self.written += 1

    def _drain(self) -> None:
        pos = self._pos
        if pos:
            self._pos = 0  # a failed write loses this batch, never repeats it
            with memoryview(self._buf) as view:
                self._f.write(view[:pos])
            if self._fd >= 0:
                self._end += pos
                self._drop_behind()

    def _drop_behind(self) -> None:
        """Drops what lies two batches behind the end. DONTNEED starts the
        write-back of dirty pages and drops clean ones, so each range is asked
        again for the next few batches, until written back it is dropped."""
        batch = len(self._buf)
        upto = self._end - 2 * batch
        if upto <= self._advised:
            return
        lo = max(self._advised - 4 * batch, 0)
        try:
            os.posix_fadvise(self._fd, lo, upto - lo, os.POSIX_FADV_DONTNEED)
        except OSError:
            self._fd = -1  # advice only: a file system that refuses it keeps its pages
            return
        self._advised = upto

    def flush(self) -> None:
        self._drain()
        self._f.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._f.close()

    def __del__(self) -> None:
        # a writer dropped without close() (the run loop always closes it):
        # its batch is still written, as a buffered file's would be
        try:
            self._drain()
        except (OSError, ValueError):
            pass
