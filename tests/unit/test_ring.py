"""The ring consumer and the agent's ingest path (records -> events ->
handler) on synthetic rings: no root, the same code the agent runs."""

from __future__ import annotations

import pytest

from tests.unit.ringsynth import PAGE, SynthRing, ring_of
from tests.unit.synth import ROLE_SERVER, Clock, Conversation, http_request, http_response
from tracer import events
from tracer.conn import ConnectionTable
from tracer.events import CloseEvent, DataEvent, OpenEvent, encode
from tracer.stats import Stats


def _data(i: int, n: int = 40) -> DataEvent:
    payload = bytes((i + k) % 251 for k in range(n))
    return DataEvent(i, 100 + i, 200 + i, 5, 1, i & 1, 1, 10 * i, 10 * i + 3, n + 7, payload,
                     f"comm{i % 3}")


def _ingest(rb, limit=0):
    got, stats = [], Stats()
    n = rb.consume_events(got.append, stats, limit)
    return n, got, stats


def test_records_arrive_decoded_in_order():
    evs = [_data(i) for i in range(23)]
    evs.insert(5, OpenEvent(5, 1, 2, 3, 1, 99, 7, 8, events.AF_INET, "10.0.0.1", 80,
                            "10.0.0.2", 4242, "srv"))
    evs.append(CloseEvent(5, 1, 2, 3, 1, 1234))
    ring = ring_of([encode(e) for e in evs])
    rb = ring.reader()
    n, got, stats = _ingest(rb)
    assert n == len(evs) == rb.records
    assert got == evs
    assert rb.bytes == sum(len(encode(e)) for e in evs)
    assert stats.decode_errors == 0 and rb.wrapped == 0
    assert ring.consumer_pos == ring.prod  # every slot released
    assert rb.available() == 0
    assert _ingest(rb)[0] == 0


def test_a_record_that_wraps_arrives_whole():
    ring = SynthRing(PAGE, start=PAGE - 64)  # the second record runs past the end
    evs = [_data(1, 8), _data(2, 300), _data(3, 16)]
    for e in evs:
        ring.push(encode(e))
    rb = ring.reader()
    n, got, _ = _ingest(rb)
    assert (n, got, rb.wrapped) == (3, evs, 1)
    # the raw callback gets the copied record too
    ring2 = SynthRing(PAGE, start=PAGE - 64)
    for e in evs:
        ring2.push(encode(e))
    raw = []
    ring2.reader().consume(lambda buf, off, size: raw.append(bytes(buf[off:off + size])))
    assert raw == [encode(e) for e in evs]


def test_busy_record_stops_the_consumer_until_committed():
    ring = SynthRing()
    a, b, c = _data(1), _data(2), _data(3)
    ring.push(encode(a))
    pos_b = ring.push(encode(b), busy=True)
    ring.push(encode(c))
    rb = ring.reader()
    n, got, _ = _ingest(rb)
    assert (n, got) == (1, [a])
    assert ring.consumer_pos == pos_b  # the busy slot is not released
    assert _ingest(rb)[:2] == (0, [])
    ring.commit(pos_b)
    n, got, _ = _ingest(rb)
    assert (n, got) == (2, [b, c])
    assert rb.records == 3


def test_discarded_record_is_skipped_and_released():
    ring = SynthRing()
    a, b, c = _data(1), _data(2), _data(3)
    ring.push(encode(a))
    ring.push(encode(b), discard=True)
    ring.push(encode(c))
    rb = ring.reader()
    n, got, _ = _ingest(rb)
    assert (n, got, rb.records) == (2, [a, c], 2)
    assert rb.bytes == len(encode(a)) + len(encode(c))
    assert ring.consumer_pos == ring.prod


def test_malformed_records_are_counted_and_the_next_one_delivered():
    good = _data(1)
    bad_type = b"\x09" + encode(good)[1:]
    truncated = encode(good)[:-4]  # claims more captured bytes than it has
    short = b"\x02" * 10
    bad_dir = bytearray(encode(good))
    bad_dir[1] = 2
    ring = ring_of([bad_type, encode(good), truncated, short, bytes(bad_dir), encode(_data(2))])
    rb = ring.reader()
    n, got, stats = _ingest(rb)
    assert n == 6  # every record read counts as delivered, as before
    assert got == [good, _data(2)]
    assert stats.decode_errors == 4
    assert ring.consumer_pos == ring.prod


def test_limit_bounds_one_call():
    ring = ring_of([encode(_data(i)) for i in range(7)])
    rb = ring.reader()
    assert _ingest(rb, limit=3)[0] == 3
    assert rb.available() > 0
    n, got, _ = _ingest(rb, limit=3)
    assert n == 3 and got[0] == _data(3)
    assert _ingest(rb)[0] == 1
    assert rb.records == 7


def test_handler_errors_propagate_and_the_record_stays():
    ring = ring_of([encode(_data(i)) for i in range(3)])
    rb = ring.reader()
    seen = []

    def boom(ev):
        seen.append(ev)
        if len(seen) == 2:
            raise RuntimeError("handler")

    with pytest.raises(RuntimeError):
        rb.consume_events(boom, Stats())
    assert rb.records == 1  # counted up to the failure
    n, got, _ = _ingest(rb)
    assert got == [_data(1), _data(2)] and n == 2


def test_closed_reader_refuses():
    rb = SynthRing().reader()
    rb.close()
    with pytest.raises(ValueError):
        rb.consume_events(print, Stats())


def test_over_checks_the_layout():
    with pytest.raises(ValueError):
        from tracer.ring import RingBuffer
        RingBuffer.over(bytearray(PAGE), bytearray(PAGE + 3000), 3000, PAGE)


def test_ring_to_spans_through_the_table():
    """The agent's ingest path end to end: a conversation's records in a ring
    (one record wrapping) -> ConnectionTable -> 23 spans, counters exact."""
    clock = Clock()
    conv = Conversation(clock, conn_id=7, role=ROLE_SERVER)
    conv.open()
    for i in range(23):
        conv.exchange(http_request("GET", f"/r{i}"), http_response(200, body=b"x" * i))
    conv.close()
    recs = [encode(e) for e in conv.events]
    ring = SynthRing(1 << 13, start=(1 << 13) - 200)
    spans, stats = [], Stats()
    table = ConnectionTable(spans.append, stats, 0)
    rb = ring.reader()
    pending = list(recs)
    while pending or rb.available():
        while pending and ring.prod + len(pending[0]) + 16 - ring.consumer_pos <= ring.size:
            ring.push(pending.pop(0))
        stats.events_delivered += rb.consume_events(table.handle, stats, 5)
    table.correlator.close()
    assert len(spans) == 23 == stats.spans_emitted
    assert [s.path for s in spans] == [f"/r{i}" for i in range(23)]
    assert stats.events_delivered == stats.events_handled == len(recs)
    assert rb.wrapped >= 1
