"""--span-stacks in user space (no root): stack ids from data events reach the
span, frames are read once per (pid, id) and symbolised, `stack` appears in
the span only when set."""

import struct

from tracer import events, loader
from tracer.span_stacks import SpanStacks
from tracer.spans import Span
from tracer.symbols import Frame


class _Map:  # the user_stacks map: u32 id -> SPAN_STACK_DEPTH u64 addresses
    def __init__(self, stacks):
        self.stacks = stacks
        self.lookups = 0

    def lookup(self, key):
        self.lookups += 1
        addrs = self.stacks.get(key)
        if addrs is None:
            return None
        return struct.pack(f"<{events.SPAN_STACK_DEPTH}Q",
                           *addrs, *[0] * (events.SPAN_STACK_DEPTH - len(addrs)))


class _Symbolizer:
    def frames(self, pid, addrs):
        return [Frame(a, "/bin/app", f"f{a:x}", 4, None) for a in addrs]


def test_constant_matches_header():
    assert f"#define SPAN_STACK_DEPTH {events.SPAN_STACK_DEPTH}" in \
        (loader.BPF_DIR / "sock.h").read_text()


def test_data_event_carries_the_stack_id():
    d = events.DataEvent(7, 10, 11, 3, 2, 0, 5, 100, 200, 16, b"GET / HTTP/1.1\r\n", "client", 9)
    assert events.decode(events.encode(d)).stack == 9
    d.stack = 0
    assert events.decode(events.encode(d)).stack == 0


def test_frames_cached_per_pid_and_id_and_missing_counted():
    m = _Map({4: [0x1010, 0x2020, 0x3030]})
    st = SpanStacks(_Symbolizer())
    st.attach(m)
    out = []
    sink = st.wrap(out.append)
    for pid in (100, 100, 200):
        sink(Span(pid=pid, stack_id=5))  # id 4 in the map
    sink(Span(pid=100, stack_id=0))  # no stack taken
    sink(Span(pid=100, stack_id=8))  # id 7: not in the map
    assert m.lookups == 3  # (100, 5), (200, 5), (100, 8)
    assert out[0].stack == [{"addr": "0x1010", "symbol": "f1010", "offset": 4,
                             "module": "/bin/app"},
                            {"addr": "0x2020", "symbol": "f2020", "offset": 4,
                             "module": "/bin/app"},
                            {"addr": "0x3030", "symbol": "f3030", "offset": 4,
                             "module": "/bin/app"}]
    assert out[1].stack is out[0].stack
    assert out[3].stack is None and out[4].stack is None
    assert st.counters() == {"spans_with_stack": 3, "span_stacks_symbolised": 2,
                             "span_stacks_missing": 1}
    assert "stack" in out[0].to_dict() and "stack" not in out[3].to_dict()
