"""The exporter pipeline: batching, drop-oldest, retry with backoff, accounting."""

import threading
import time

import pytest

from tracer.export.pipeline import ExportError, ExportPipeline, RetryableError


class FakeExporter:
    """Records batches; `outcomes` is consumed per call: 'ok', 'retry', 'fail', or an int
    (spans rejected by the receiver)."""

    def __init__(self, outcomes=(), block: threading.Event | None = None):
        self.outcomes = list(outcomes)
        self.batches: list[list] = []
        self.calls = 0
        self.block = block
        self.closed = False

    def export(self, batch):
        self.calls += 1
        if self.block is not None:
            self.block.wait(10)
        out = self.outcomes.pop(0) if self.outcomes else "ok"
        if out == "retry":
            raise RetryableError("UNAVAILABLE")
        if out == "fail":
            raise ExportError("bad request")
        self.batches.append(list(batch))
        return out if isinstance(out, int) else 0

    def close(self):
        self.closed = True

    @property
    def spans(self):
        return [s for b in self.batches for s in b]


def pipe(exp, **kw):
    opts = dict(queue_size=100, batch_size=10, interval_s=0.05, max_retry_s=2.0,
                backoff_initial_s=0.01, backoff_max_s=0.05)
    opts.update(kw)
    return ExportPipeline(exp, name="fake", **opts)


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def balanced(c):
    return c["spans_submitted"] == (c["spans_exported"] + c["spans_export_failed"]
                                    + c["spans_export_dropped"])


def test_batches_by_size_and_time_in_order():
    exp = FakeExporter()
    p = pipe(exp, interval_s=0.2)
    p.start()
    for i in range(23):
        p.submit(i)
    wait_for(lambda: len(exp.spans) == 20)  # two full batches, no wait for the timer
    assert [len(b) for b in exp.batches] == [10, 10]
    wait_for(lambda: len(exp.spans) == 23)  # the rest after the interval
    p.close()
    assert exp.spans == list(range(23))
    assert [len(b) for b in exp.batches] == [10, 10, 3]
    c = p.counters()
    assert (c["spans_exported"], c["export_batches"], c["spans_export_dropped"]) == (23, 3, 0)
    assert exp.closed and balanced(c)


def test_full_queue_drops_oldest_and_counts():
    block = threading.Event()
    exp = FakeExporter(block=block)
    p = pipe(exp, queue_size=20, batch_size=5)
    p.start()
    for i in range(5):
        p.submit(i)
    wait_for(lambda: exp.calls == 1)  # the sender holds batch 0..4, blocked
    for i in range(5, 35):  # 30 more into a queue of 20: the 10 oldest go
        p.submit(i)
    assert p.counters()["spans_export_dropped"] == 10
    block.set()
    p.close()
    assert exp.spans == list(range(5)) + list(range(15, 35))
    c = p.counters()
    assert c["spans_exported"] == 25 and c["spans_export_dropped"] == 10 and balanced(c)


def test_submit_never_blocks_while_receiver_hangs():
    block = threading.Event()
    exp = FakeExporter(block=block)
    p = pipe(exp, queue_size=50, batch_size=10)
    p.start()
    t0 = time.perf_counter()
    for i in range(10_000):
        p.submit(i)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0
    assert len(p._q) <= 50
    block.set()
    p.close()
    assert balanced(p.counters())


def test_retry_then_success():
    exp = FakeExporter(["retry", "retry", "ok"])
    p = pipe(exp)
    p.start()
    for i in range(7):
        p.submit(i)
    wait_for(lambda: len(exp.spans) == 7)
    p.close()
    c = p.counters()
    assert c["export_retries"] == 2 and c["spans_exported"] == 7 and c["spans_export_failed"] == 0


def test_backoff_grows_exponentially():
    times = []

    class Timed(FakeExporter):
        def export(self, batch):
            times.append(time.monotonic())
            return super().export(batch)

    exp = Timed(["retry"] * 4)
    p = pipe(exp, backoff_initial_s=0.05, backoff_max_s=1.0)
    p.start()
    p.submit(1)
    wait_for(lambda: exp.spans == [1])
    p.close()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 4
    for g, expected in zip(gaps, [0.05, 0.1, 0.2, 0.4], strict=True):
        assert 0.75 * expected <= g <= expected + 0.15


def test_retry_gives_up_after_max_retry_s_and_counts_failed():
    exp = FakeExporter(["retry"] * 1000)
    p = pipe(exp, max_retry_s=0.2)
    p.start()
    for i in range(4):
        p.submit(i)
    wait_for(lambda: p.counters()["spans_export_failed"] == 4)
    exp.outcomes.clear()  # receiver back
    p.submit(99)
    wait_for(lambda: exp.spans == [99])
    p.close()
    c = p.counters()
    assert c["export_batches_failed"] == 1 and c["spans_exported"] == 1 and balanced(c)


def test_non_retryable_error_fails_at_once():
    exp = FakeExporter(["fail"])
    p = pipe(exp)
    p.start()
    p.submit(1)
    wait_for(lambda: p.counters()["spans_export_failed"] == 1)
    p.close()
    assert p.counters()["export_retries"] == 0 and exp.calls == 1


def test_partial_success_counts_rejected_as_failed():
    exp = FakeExporter([3])
    p = pipe(exp)
    p.start()
    for i in range(10):
        p.submit(i)
    p.close()
    c = p.counters()
    assert c["spans_exported"] == 7 and c["spans_export_failed"] == 3 and balanced(c)


def test_close_flushes_queue():
    exp = FakeExporter()
    p = pipe(exp, interval_s=60, batch_size=50)
    p.start()
    for i in range(23):
        p.submit(i)
    p.close()
    assert exp.spans == list(range(23))


def test_close_with_receiver_down_is_bounded_and_counts_everything():
    exp = FakeExporter(["retry"] * 10_000)
    p = pipe(exp, interval_s=60, batch_size=5, max_retry_s=30)
    p.start()
    for i in range(23):
        p.submit(i)
    t0 = time.monotonic()
    p.close(timeout=0.3)
    assert time.monotonic() - t0 < 2.0
    c = p.counters()
    assert c["spans_exported"] == 0 and balanced(c) and c["export_queue_len"] == 0


def test_close_without_start_drains_synchronously():
    exp = FakeExporter()
    p = pipe(exp)
    for i in range(3):
        p.submit(i)
    p.close()
    assert exp.spans == [0, 1, 2]


def test_bad_sizes():
    with pytest.raises(ValueError):
        ExportPipeline(FakeExporter(), queue_size=0)
