"""The exporter pipeline: bounded queue -> batches -> a sender thread with retry.

    pipe = ExportPipeline(exporter)     # exporter.export(list[Span]) -> rejected count
    pipe.start()
    pipe.submit(span)                   # agent thread: O(1), never blocks, never raises
    pipe.close(timeout=5.0)             # flush what is left, then stop

submit() is called by the ring-buffer consumer for every span, so it takes no
lock: a deque append (atomic under the GIL) and, once per batch, an Event.set
to wake the sender. When the queue is full the *oldest* span is dropped and
counted: after an outage the freshest spans are the useful ones.

The sender retries a batch with exponential backoff (plus jitter) while the
exporter raises RetryableError (gRPC UNAVAILABLE, HTTP 429/5xx, connection
refused), for at most `max_retry_s`; then the batch counts as failed. A
RefusedError (credentials or TLS refused: retrying cannot help) fails the
batch at once and counts it in `export_batches_refused` too. Every span
submitted ends in exactly one counter once closed:
    spans_submitted == spans_exported + spans_export_failed + spans_export_dropped
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("tracer.export")


class ExportError(Exception):
    """The batch cannot be delivered (bad request, encoding): not retried."""


class RefusedError(ExportError):
    """The receiver refuses this client (HTTP 401/403, gRPC UNAUTHENTICATED or
    PERMISSION_DENIED, a failed TLS handshake): the same request would be
    refused again, so it is not retried. str() names the endpoint, the cause
    and the fix."""


class RetryableError(ExportError):
    """The receiver is unavailable or overloaded: try again later."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ExportPipeline:
    def __init__(self, exporter, *, name: str = "", queue_size: int = 8192,
                 batch_size: int = 512, interval_s: float = 1.0, max_retry_s: float = 30.0,
                 backoff_initial_s: float = 0.25, backoff_max_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be positive")
        self.exporter = exporter
        self.name = name or getattr(exporter, "name", type(exporter).__name__)
        self.queue_size = queue_size
        self.batch_size = min(batch_size, queue_size)
        self.interval_s = interval_s
        self.max_retry_s = max_retry_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._q: deque = deque()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._close_deadline = float("inf")
        self._thread: threading.Thread | None = None
        # written by the agent thread only
        self.submitted = 0
        self.dropped = 0
        # written by the sender thread only
        self.exported = 0
        self.failed = 0
        self.batches = 0
        self.batches_failed = 0
        self.batches_refused = 0
        self.retries = 0
        self.last_error = ""
        self._failing = ""  # "" | "refused" | "failed": the outage being reported

    # ---- producer side (agent thread) ----------------------------------------------
    def submit(self, span) -> None:
        q = self._q
        if len(q) >= self.queue_size:
            try:
                q.popleft()
                self.dropped += 1
            except IndexError:  # the sender emptied it meanwhile
                pass
        q.append(span)
        self.submitted += 1
        if len(q) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    __call__ = submit

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"export:{self.name}",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued within `timeout` seconds; drop (and count) the rest."""
        self._close_deadline = self._clock() + timeout
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
            if self._thread.is_alive():
                log.warning("%s: sender still busy at exit", self.name)
        else:
            self._drain()
        # whatever could not be sent in time is lost: count it
        left = len(self._q)
        self._q.clear()
        self.dropped += left
        closer = getattr(self.exporter, "close", None)
        if closer is not None:
            try:
                closer()
            except (OSError, ExportError) as e:
                log.warning("%s: close failed: %s", self.name, e)

    def counters(self) -> dict[str, int]:
        return {
            "spans_submitted": self.submitted,
            "spans_exported": self.exported,
            "spans_export_failed": self.failed,
            "spans_export_dropped": self.dropped,
            "export_batches": self.batches,
            "export_batches_failed": self.batches_failed,
            "export_batches_refused": self.batches_refused,
            "export_retries": self.retries,
            "export_queue_len": len(self._q),
        }

    # ---- sender thread -------------------------------------------------------------------
    def _run(self) -> None:
        next_flush = self._clock() + self.interval_s
        while not self._closing.is_set():
            wait = next_flush - self._clock()
            if len(self._q) < self.batch_size and wait > 0:
                self._wake.wait(wait)
            self._wake.clear()
            if self._closing.is_set():
                break
            full = len(self._q) >= self.batch_size
            if full or self._clock() >= next_flush:
                self._send_batches(only_full=not self._clock() >= next_flush)
                next_flush = self._clock() + self.interval_s
        self._drain()

    def _drain(self) -> None:
        while self._q and self._clock() < self._close_deadline:
            self._send_batches(only_full=False)

    def _take(self) -> list:
        q = self._q
        batch = []
        for _ in range(min(len(q), self.batch_size)):
            try:
                batch.append(q.popleft())
            except IndexError:
                break
        return batch

    def _send_batches(self, only_full: bool) -> None:
        while self._q and (not only_full or len(self._q) >= self.batch_size):
            batch = self._take()
            if batch:
                self._send(batch)
            if self._closing.is_set() and self._clock() >= self._close_deadline:
                return

    def _send(self, batch: list) -> None:
        start = self._clock()
        delay = self.backoff_initial_s
        while True:
            try:
                rejected = self.exporter.export(batch) or 0
            except RetryableError as e:
                self.last_error = str(e)
                now = self._clock()
                pause = delay * random.uniform(0.8, 1.2)
                if e.retry_after is not None:
                    pause = max(pause, min(e.retry_after, self.backoff_max_s * 4))
                deadline = min(start + self.max_retry_s, self._close_deadline)
                if now + pause > deadline:
                    self._fail(batch, e)
                    return
                self.retries += 1
                log.debug("%s: %s; retry in %.2f s", self.name, e, pause)
                if self._closing.is_set():  # the Event no longer waits: sleep
                    time.sleep(max(min(pause, self._close_deadline - self._clock()), 0))
                else:
                    self._closing.wait(pause)  # close() cuts the pause short
                delay = min(delay * 2, self.backoff_max_s)
                continue
            except ExportError as e:
                self.last_error = str(e)
                self._fail(batch, e)
                return
            except Exception as e:  # noqa: BLE001 - a bug or the environment: the
                # batch is counted and said in one line; the sender carries on
                redact = getattr(self.exporter, "redact", str)
                err = ExportError(redact(f"{type(e).__name__}: {e}"))
                self.last_error = str(err)
                self._fail(batch, err)
                return
            rejected = min(max(int(rejected), 0), len(batch))
            self.exported += len(batch) - rejected
            self.failed += rejected
            self.batches += 1
            if self._failing:
                self._failing = ""
                log.warning("%s: exporting again", self.name)
            return

    def _fail(self, batch: list, err: Exception) -> None:
        # one line per outage (and per kind of failure), not per batch
        kind = "refused" if isinstance(err, RefusedError) else "failed"
        if self._failing != kind:
            self._failing = kind
            if kind == "refused":  # the message names the endpoint
                log.warning("%s; not retried: %d spans not exported (refused batches are "
                            "counted in export_batches_refused, not logged)", err, len(batch))
            else:
                log.warning("%s: %d spans not exported: %s (more are counted, not logged)",
                            self.name, len(batch), err)
        self.failed += len(batch)
        self.batches_failed += 1
        if kind == "refused":
            self.batches_refused += 1
