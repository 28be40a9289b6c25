"""`tracer run --span-stacks`: the user stack of the thread at request start,
attached to each span as an optional field `stack`.

The kernel side (sock.bpf.c, knob `span_stacks`) calls bpf_get_stackid once per
request, at the first request-direction syscall of a turn of the conversation
(a client's first write of a request, a server's first read of one), and puts
1 + the stack id in that data event. The span built from the request carries it
(Span.stack_id); just before the span reaches the sink its frames are read from
the BPF stack map `user_stacks` and symbolised (tracer.symbols.Symbolizer).

Stack ids are never deleted from the map (an id's content then never changes,
so frames are cached per (pid, id)); a new stack whose hash bucket is taken is
counted by the kernel (CTR_STACK_FAILED) and its span has no stack.

Frames come from frame pointers (the kernel's user-stack walk): code built
without them stops the walk early, and the caller of a libc syscall wrapper is
skipped (the wrapper sets up no frame).

SpanStacks is an add-on of the agent (tracer/addons.py): it turns the knob on,
wraps the sink and reads the map of the loaded sock.bpf.o.

Split from the privileged broker (tracer/broker.py), the agent may not read
other processes' /proc/<pid>/maps nor files under directories it cannot
search: the broker opens them (`stack_maps`, then `stack_module` for a file
it read in those maps) and passes the fds; the agent reads and parses.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable

from .addons import Addon
from .events import SPAN_STACK_DEPTH

MAX_CACHED = 4096  # (pid, stack id) -> frames


class SpanStacks(Addon):
    name = "span_stacks"
    knobs = {"span_stacks": 1}
    warning = "spans carry no stack"

    def __init__(self, symbolizer=None):
        # the symbols package (pyelftools, the debug-file lookup) only with
        # --span-stacks, imported here: before the privilege drop
        from .symbols import Symbolizer
        from .symbols.brokered import BrokerSymbolizer

        self._brokered = BrokerSymbolizer
        self.symbolizer = symbolizer if symbolizer is not None else Symbolizer()
        self.map = None  # loader.Map of user_stacks, set once sock.bpf.o is loaded
        self._cache: OrderedDict[tuple[int, int], list[dict] | None] = OrderedDict()
        self._unpack = struct.Struct(f"<{SPAN_STACK_DEPTH}Q").unpack_from
        self.spans_with_stack = 0
        self.stacks_missing = 0  # a stack id the map no longer held (should stay 0)
        self.stacks_symbolised = 0

    def attach(self, stack_map) -> None:
        self.map = stack_map

    def start(self, kernel, table) -> None:
        self.attach(kernel.map("user_stacks"))

    def separated(self, broker) -> None:
        self.symbolizer = self._brokered(broker)
        self._cache.clear()  # frames named before the split stay right, but start afresh

    def addresses(self, stack: int) -> list[int] | None:
        """Return addresses (innermost first) of stack id `stack - 1`."""
        raw = self.map.lookup(stack - 1) if self.map is not None else None
        if raw is None:
            return None
        out = []
        for a in self._unpack(raw):
            if not a:
                break
            out.append(a)
        return out

    def frames(self, pid: int, stack: int) -> list[dict] | None:
        key = (pid, stack)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        addrs = self.addresses(stack)
        if addrs is None:
            self.stacks_missing += 1
            frames = None
        else:
            self.stacks_symbolised += 1
            frames = [{"addr": f"{f.addr:#x}", "symbol": f.symbol, "offset": f.offset,
                       "module": f.module}
                      for f in self.symbolizer.frames(pid, addrs)]
        self._cache[key] = frames
        if len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return frames

    def wrap(self, sink: Callable) -> Callable:
        """A sink that fills span.stack, then passes the span on."""

        def with_stack(span) -> None:
            sid = span.stack_id
            if sid:
                span.stack = self.frames(span.pid, sid)
                if span.stack:
                    self.spans_with_stack += 1
            sink(span)

        return with_stack

    def counters(self) -> dict[str, int]:
        return {"spans_with_stack": self.spans_with_stack,
                "span_stacks_symbolised": self.stacks_symbolised,
                "span_stacks_missing": self.stacks_missing}
