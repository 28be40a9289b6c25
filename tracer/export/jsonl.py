# cython: annotation_typing=False
"""JSON lines: one span object per line (contract 1, schema 1), the default output.

A compiled span writes its own line (Span.write_json, the same bytes as
orjson's encoding of Span.to_dict, without building the dicts); orjson encodes
the rest. This runs once per span on the agent's only thread. The lines are
gathered in one fixed buffer, reused for the whole run, and written a batch at
a time: no write call per span, and no memory taken and given back per batch.

A span file is written once and read later, if at all, so where the file
system allows it the batches bypass the page cache (O_DIRECT, `_Direct`):
every page-cache page is new memory to fill, and that first touch cost more
than the rest of the write here (docs/performance.md). Elsewhere the written
pages are dropped behind the writer.
"""

from __future__ import annotations

import errno
import fcntl
import io
import mmap
import os
import stat
import sys
from typing import BinaryIO

import cython
import orjson

from tracer.spans import Span

_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE  # the line's "\n" without a copy of the line
BATCH_BYTES = 1 << 18  # a write per this much; flush() writes what is left
# O_DIRECT offsets and lengths are multiples of the device's logical block
# size: 4096 covers 512-byte and 4K devices.
DIO_ALIGN = 4096


class _Direct:
    """Whole aligned blocks of a regular file written with O_DIRECT from one
    aligned buffer. The last partial block stays in the buffer; flush() writes
    it through the page cache so that readers see every line, and the next
    direct write of that block replaces it."""

    def __init__(self, fd: int, capacity: int) -> None:
        self.off = os.lseek(fd, 0, os.SEEK_CUR)
        if self.off % DIO_ALIGN:
            raise OSError(errno.EINVAL, "not at a block boundary")
        self.fd = fd
        self.flags = fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT
        self.buf = mmap.mmap(-1, capacity + DIO_ALIGN)  # page aligned
        self.view = memoryview(self.buf)
        self.tail = 0
        fcntl.fcntl(fd, fcntl.F_SETFL, self.flags | os.O_DIRECT)

    def write(self, data) -> None:
        """data: at most `capacity` bytes."""
        t = self.tail
        total = t + len(data)
        self.view[t:total] = data
        full = total - total % DIO_ALIGN
        if full:
            self._pwrite(full)
            # the partial block moves to the front (rem < DIO_ALIGN <= full: no overlap)
            rem = total - full
            self.view[:rem] = self.view[full:total]
            self.off += full
            total = rem
        self.tail = total

    def _pwrite(self, n: int) -> None:
        done = 0
        while done < n:
            w = os.pwrite(self.fd, self.view[done:n], self.off + done)
            if w % DIO_ALIGN:  # a short write leaves no block boundary to go on from
                raise OSError(errno.EIO, f"short direct write ({w} of {n - done} bytes)")
            done += w

    def flush(self) -> None:
        if self.tail:
            self.buffered()
            try:
                os.pwrite(self.fd, self.view[:self.tail], self.off)
            finally:
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self.flags | os.O_DIRECT)

    def buffered(self) -> None:
        fcntl.fcntl(self.fd, fcntl.F_SETFL, self.flags)

    def close(self) -> None:
        self.view.release()
        self.buf.close()


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
        self._direct = None
        self._fd = -1  # a regular file's, for the page-cache drop
        self._end = self._advised = 0
        try:
            fd = self._f.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self._f.flush()
                try:
                    self._direct = _Direct(fd, len(self._buf))
                except OSError:
                    # no O_DIRECT here (tmpfs before 6.6, some FUSE): drop behind
                    self._fd = fd
                    self._end = self._advised = os.lseek(fd, 0, os.SEEK_CUR)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass  # not a file (a pipe, a terminal, a test's stream)

    @cython.locals(line=bytes, n=cython.Py_ssize_t, pos=cython.Py_ssize_t)
    def __call__(self, span) -> None:
        # the compiled span writes its own line into the batch (no dicts, no
        # bytes object); -1: no room left, -2: one of its values is orjson's
        if type(span) is Span:  # the compiled span's method as a C call
            pos = cython.cast(Span, span).write_json(self._buf, self._pos)
            if pos == -1 and self._pos:
                self._drain()
                pos = cython.cast(Span, span).write_json(self._buf, 0)
        else:
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
                with memoryview(line) as view:
                    for i in range(0, n, len(self._buf)):
                        self._write(view[i:i + len(self._buf)])
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
                self._write(view[:pos])

    def _write(self, data) -> None:
        """data: at most one batch."""
        d = self._direct
        if d is not None:
            try:
                d.write(data)
                return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
            # refused after all (the device wants a larger alignment): from
            # here on through the page cache, the kept partial block first
            self._direct = None
            d.buffered()
            self._f.seek(d.off)
            self._f.write(d.view[:d.tail])
            d.close()
            self._fd = self._f.fileno()
            self._end = self._advised = d.off
        self._f.write(data)
        if self._fd >= 0:
            self._end += len(data)
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

    @property
    def direct(self) -> bool:
        """True while batches bypass the page cache."""
        return self._direct is not None

    def flush(self) -> None:
        self._drain()
        if self._direct is not None:
            self._direct.flush()
        else:
            self._f.flush()

    def close(self) -> None:
        self.flush()
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self._own:
            self._f.close()

    def __del__(self) -> None:
        # a writer dropped without close() (the run loop always closes it):
        # its batch is still written, as a buffered file's would be
        try:
            self._drain()
            if self._direct is not None:
                self._direct.flush()
        except (OSError, ValueError):
            pass
