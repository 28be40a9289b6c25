"""The output half of the per-event path: ids, the traceparent fast path, the
batched JSON lines writer. The same checks run on the compiled core and on
the pure one (TRACER_PURE=1)."""

from __future__ import annotations

import gc
import random

import orjson
import pytest

from tests.unit.export_spans import make_span
from tracer.export.jsonl import JsonlWriter
from tracer.tracecontext import (
    new_span_id,
    new_trace_id,
    parse_traceparent,
    traceparent_ids,
    traceparent_sampled,
)

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"


def _splitmix64(state: int):
    """The reference sequence: splitmix64 (Steele, Lea, Flood 2014)."""
    mask = (1 << 64) - 1
    while True:
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        yield z ^ (z >> 31)


def test_ids_follow_splitmix64_seeded_from_random():
    """Draw for draw: seeded by random.getrandbits(64), a trace id takes two
    draws (high half first), a span id one; random.seed repeats a run."""
    import tracer.tracecontext as tc

    random.seed(11)
    tc.reseed()
    got = [(new_trace_id(), new_span_id()) for _ in range(500)]
    random.seed(11)
    ref = _splitmix64(random.getrandbits(64))
    want = []
    for _ in range(500):
        hi, lo = next(ref), next(ref)
        want.append((f"{hi:016x}{lo:016x}", f"{next(ref):016x}"))
    assert got == want
    assert len({t for t, _ in got} | {s for _, s in got}) == 1000


def test_a_forked_child_starts_its_own_sequence():
    """After fork the child reseeds (from random, which reseeds itself in
    the child): parent and child never hand out the same ids."""
    import os

    import tracer.tracecontext as tc

    tc.reseed()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without cleanup
        os.close(r)
        os.write(w, " ".join(new_span_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = set(f.read().split())
    os.waitpid(pid, 0)
    parent = {new_span_id() for _ in range(50)}
    assert len(child) == len(parent) == 50 and not child & parent


def test_zero_bits_become_one_and_the_digits_are_lowercase_hex():
    import tracer.tracecontext as tc

    assert tc.span_id_of(0) == "0" * 15 + "1"
    assert tc.trace_id_of(0, 0) == "0" * 31 + "1"
    assert tc.trace_id_of(0, 1) == "0" * 31 + "1"
    assert tc.trace_id_of(1, 0) == "0" * 15 + "1" + "0" * 16
    assert tc.span_id_of((1 << 64) - 1) == "f" * 16
    assert tc.trace_id_of((1 << 64) - 1, (1 << 64) - 1) == "f" * 32
    for v in (0x0123456789ABCDEF, 0xFEDCBA9876543210, 1 << 63, 10):
        assert tc.span_id_of(v) == f"{v:016x}"


def _old_parse(value):
    """The former parse_traceparent (strip and count), the reference."""
    v = value.strip()
    n = len(v)
    if n < 55 or v[2] != "-" or v[35] != "-" or v[52] != "-":
        return None
    version = v[:2]
    if version == "ff" or (n > 55 and (version == "00" or v[55] != "-")):
        return None
    head = v[:55]
    if head.strip("0123456789abcdef-") or head.count("-") != 3:
        return None
    if v[3:35] == "0" * 32 or v[36:52] == "0" * 16:
        return None
    return v[3:35], v[36:52]


def test_traceparent_ids_agree_with_the_reference():
    rnd = random.Random(3)
    base = f"00-{TID}-{PID}-01"
    alphabet = "0123456789abcdefABCDEF-g _\t"
    values = [base, f" {base} ", f"01-{TID}-{PID}-0f-x", f"ff-{TID}-{PID}-01", base[:54]]
    for _ in range(3000):
        v = list(base + rnd.choice(["", "-zz", "x"]))
        for _ in range(rnd.randint(0, 3)):
            v[rnd.randrange(len(v))] = rnd.choice(alphabet)
        values.append("".join(v))
    for flags in range(256):
        values.append(f"00-{TID}-{PID}-{flags:02x}")
    for v in values:
        ref = _old_parse(v)
        got = traceparent_ids(v)
        assert parse_traceparent(v) == ref, v
        if ref is None:
            assert got is None, v
        else:
            assert got == (*ref, traceparent_sampled(v)), v


@pytest.mark.parametrize("batch", [1, 300, 1 << 18])
def test_writer_lines_are_orjson_of_to_dict_and_flush_writes_all(tmp_path, batch):
    out = tmp_path / "s.jsonl"
    w = JsonlWriter(str(out), batch_bytes=batch)
    spans = [make_span(path="/" + "x" * (i * 7), attributes_extra={"k": i}) for i in range(50)]
    for s in spans:
        w(s)
    assert w.written == 50
    w.flush()
    want = b"".join(orjson.dumps(s.to_dict()) + b"\n" for s in spans)
    assert out.read_bytes() == want
    w(spans[0])
    w.close()  # close writes what flush has not
    assert out.read_bytes() == want + orjson.dumps(spans[0].to_dict()) + b"\n"


def test_writer_dropped_without_close_still_writes_its_batch(tmp_path):
    out = tmp_path / "s.jsonl"
    w = JsonlWriter(str(out))
    s = make_span()
    w(s)
    del w
    gc.collect()
    assert out.read_bytes() == orjson.dumps(s.to_dict()) + b"\n"


def _resident_pages(path) -> int:
    """Pages of the file in the page cache (mincore on a mapping of it)."""
    import ctypes
    import mmap
    import os

    size = os.path.getsize(path)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = ctypes.create_string_buffer(pages)
        assert libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
        libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec.raw)


def test_span_file_bypasses_the_page_cache(tmp_path):
    """Batches go with O_DIRECT: after 2 MB of spans only the partial last
    block that flush() wrote through the page cache is cached, and the file
    holds exactly the lines."""
    out = tmp_path / "s.jsonl"
    w = JsonlWriter(str(out), batch_bytes=1 << 16)
    assert w.direct
    spans = [make_span(path="/" + "y" * (i % 97), attributes_extra={"k": i}) for i in range(2700)]
    for s in spans:
        w(s)
    w.flush()
    want = b"".join(orjson.dumps(s.to_dict()) + b"\n" for s in spans)
    assert len(want) > 2 << 20
    assert out.read_bytes() == want
    w(spans[0])
    w.close()
    assert out.read_bytes() == want + orjson.dumps(spans[0].to_dict()) + b"\n"


def test_span_file_pages_are_not_kept(tmp_path):
    out = tmp_path / "s.jsonl"
    w = JsonlWriter(str(out), batch_bytes=1 << 16)
    s = make_span(path="/" + "z" * 300)
    for _ in range(3000):
        w(s)
    w.flush()
    assert _resident_pages(out) <= 1  # the flushed partial block at most
    w.close()


def test_span_file_falls_back_to_the_page_cache_when_direct_io_is_refused(tmp_path,
                                                                           monkeypatch):
    """A device that refuses the alignment (EINVAL) mid-run: the kept partial
    block and every later batch go through the page cache, nothing lost."""
    import errno

    from tracer.export import jsonl

    out = tmp_path / "s.jsonl"
    w = JsonlWriter(str(out), batch_bytes=1 << 14)
    assert w.direct
    spans = [make_span(path="/" + "w" * (i % 53), attributes_extra={"k": i}) for i in range(400)]
    for s in spans[:200]:
        w(s)

    def refuse(self, n):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(jsonl._Direct, "_pwrite", refuse)
    for s in spans[200:]:
        w(s)
    assert not w.direct
    w.close()
    assert out.read_bytes() == b"".join(orjson.dumps(s.to_dict()) + b"\n" for s in spans)
