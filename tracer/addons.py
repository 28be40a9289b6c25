"""The one interface of the agent's optional features (tracer/agent.py).

The agent is the kernel side (tracer/sock.py: sock.bpf.o, its maps and its
ring) plus add-ons: TLS plaintext (tracer/tls.py), header injection
(tracer/inject.py), span stacks (tracer/span_stacks.py), adaptive sampling
(tracer/sampling.py), and later runtime probes. The agent loops over them and
never branches on a feature. Every hook has a no-op default; an add-on
implements what it needs. The agent calls, in this order:

    knobs                  sock.bpf.o rodata the add-on turns on (before it loads)
    wrap(sink)             a sink around the span sink (before the table exists)
    start(kernel, table)   once sock.bpf.o is attached; a LoaderError, or
                           `unavailable` set, means the feature is off: one line,
                           and the rest keeps tracing
    begin()                the run loop starts (start-up work is not load)
    drain()                before every read of the events ring, if `drains`
    tick(now_ns)           every housekeeping second (CLOCK_MONOTONIC ns)
    stop()                 before the kernel side detaches: produce nothing more
    close()                after the last events; counters() still answers
    counters()             its summary entries, at any time

Split into broker and agent (tracer/broker.py), after start:
    separated(broker)      in the agent: the channel to the privileged broker,
                           through which run-time attaching goes (tls.py)
    bpf_objects()          in the broker: the objects it detaches and closes
    broker_ops()           in the broker: the requests the add-on answers there,
                           {op: ({field: type}, handler(**fields) -> reply dict)};
                           the fds of links made meanwhile go with the reply

`idle()` gives the summary entries of a feature that is not in use, so that
the summary's keys do not depend on the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .conn import ConnectionTable
    from .sock import SockKernel


class Addon:
    name: ClassVar[str] = ""  # short, stable: what the kernel counters table refers to
    knobs: ClassVar[dict[str, int]] = {}
    drains: ClassVar[bool] = False  # drain() on every poll: only where order matters
    warning: ClassVar[str] = ""  # logged with the reason when unavailable ("" : not logged)
    unavailable: str = ""  # why the feature is off although asked for; "" while it runs

    @classmethod
    def idle(cls) -> dict:
        return {}

    def wrap(self, sink: Callable) -> Callable:
        return sink

    def start(self, kernel: SockKernel, table: ConnectionTable) -> None:
        pass

    def begin(self) -> None:
        pass

    def drain(self) -> None:
        pass

    def tick(self, now_ns: int) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass

    def counters(self) -> dict:
        return {}

    def separated(self, broker) -> None:
        pass

    def bpf_objects(self) -> list:
        return []

    def broker_ops(self) -> dict:
        return {}
