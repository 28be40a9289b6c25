"""The tracing agent: the kernel side (tracer/sock.py: sock.bpf.o, its maps,
its ring, its counters) plus add-ons (tracer/addons.py: TLS plaintext,
injection, span stacks, adaptive sampling), draining the ring into the
connection table, which hands spans to a sink.

    tracer = Tracer(Filters(ports=[8080]), sink=writer)
    tracer.start()                  # LoaderError subclasses on failure
    tracer.run(duration=10, stop=event)
    summary = tracer.stop()         # drains, closes, reads kernel counters

One thread does everything: poll, decode, reassemble, parse, export. The BPF
side batches wake-ups, so a poll returns many records at once. The loop
never branches on a feature: it loops over the add-ons, and an add-on that
cannot run says why in one line while the rest keeps tracing.

`source` replaces the ring with recorded records (tests/unit/test_agent_replay.py):
the same loop, table, correlation and sink, with nothing loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from . import core, events, loader
from .addons import Addon
from .conn import ConnectionTable
from .golang import GoRuntime
from .inject import Injection
from .loader import clock_offset_ns
from .pyasync import PyAsyncio
from .sampling import AdaptiveController, AdaptiveSampling
from .sock import (  # noqa: F401 (EXIT_PROGRAMS, comm_key, descendants: re-exported)
    DEFAULT_CAPTURE_BYTES,
    DEFAULT_RING_BYTES,
    EXIT_PROGRAMS,
    KERNEL_COUNTERS,
    Filters,
    SockKernel,
    comm_key,
    descendants,
    load_sock,
)
from .span_stacks import SpanStacks
from .stats import COUNTERS as STATS_FIELDS
from .stats import Stats
from .tls import TlsPlaintext

log = logging.getLogger("tracer.agent")

IDLE_EXPIRY_NS = 300 * 1_000_000_000  # connections with no event for 5 min are dropped
HOUSEKEEPING_S = 1.0
HOUSEKEEPING_MAX_LATE_S = 0.25  # a ring that never drains (overload) still gets housekeeping
POLL_MS = 1000  # longest wait for the ring: housekeeping is due then anyway (the kernel wakes us at fill)
# Records per consume call: under sustained overload the ring never empties, and
# an unbounded drain would starve housekeeping (expiry, counters, sampling).
# Small enough that a turn of the loop stays short even when the agent is held
# to a CPU quota (overload scenario: 8192 records took seconds of wall time).
CONSUME_BATCH = 1024
# every add-on kind: one not in use still gives its idle() summary entries
ADDON_KINDS: tuple[type[Addon], ...] = (SpanStacks, AdaptiveSampling, TlsPlaintext, Injection,
                                        GoRuntime, PyAsyncio)


class Tracer:
    def __init__(self, filters: Filters | None = None, *, sink: Callable | None = None,
                 capture_bytes: int = DEFAULT_CAPTURE_BYTES,
                 ring_bytes: int = DEFAULT_RING_BYTES,
                 stats: Stats | None = None, tls_plaintext: bool = True,
                 inject_headers: bool = False, inject_sample_rate: float = 1.0,
                 policy: Callable | None = None, adaptive: AdaptiveController | None = None,
                 on_sampling: Callable[[AdaptiveController], None] | None = None,
                 span_stacks: bool = False, go_runtime: bool = True,
                 asyncio_runtime: bool = False, source=None,
                 addons: Sequence[Addon] = ()):
        """The flags choose the built-in add-ons; `addons` adds more (after
        them); `source` replaces sock.bpf.o's ring (tracer/sock.py)."""
        if not 16 <= capture_bytes <= events.MAX_PAYLOAD:
            raise ValueError(f"capture size must be 16..{events.MAX_PAYLOAD} bytes")
        self.kernel = SockKernel(filters or Filters(), capture_bytes=capture_bytes,
                                 ring_bytes=ring_bytes, source=source)
        self.sampling = AdaptiveSampling(adaptive, on_sampling)  # always: reload may enable it
        self.addons: list[Addon] = [
            *([SpanStacks()] if span_stacks else []),
            self.sampling,
            *([TlsPlaintext()] if tls_plaintext else []),
            *([Injection(inject_sample_rate)] if inject_headers else []),
            *([GoRuntime()] if go_runtime else []),
            *([PyAsyncio()] if asyncio_runtime else []),
            *addons,
        ]
        self._running: list[Addon] = []  # started and available, until stop()
        self._drains: tuple[Callable[[], None], ...] = ()  # per poll, before the ring is read
        sink = sink or (lambda span: None)
        for a in self.addons:
            sink = a.wrap(sink)
        self.sink = sink
        self.capture_bytes = capture_bytes
        self.stats = stats or Stats()
        # kernel counters the pipeline's Stats carries too: copied at each read
        self._in_stats = [key for key, _ in KERNEL_COUNTERS.values() if key in STATS_FIELDS]
        self.clock_offset_ns = clock_offset_ns()
        self.table = ConnectionTable(self.sink, self.stats, clock_offset_ns=self.clock_offset_ns,
                                     capture_bytes=capture_bytes)
        # filters and head sampling (tracer/sampling.py), swapped on reload
        self.table.correlator.policy = policy
        self._handler = self.table.handle  # what each decoded event goes to
        self.broker = None  # broker.BrokerClient once split from the privileged broker
        self.started_at = 0.0
        self.stopped_at = 0.0
        self._last_poll = 0.0
        self.max_poll_gap = 0.0  # longest time between two consume calls (s): stalls
        self.core = core.info()
        if self.core["stale"] or (self.core["core"] != "compiled"
                                  and not core.pure_requested()):
            log.warning("per-event core: %s", self.core["reason"])  # not built, or stale
        elif self.core["core"] != "compiled":
            log.info("per-event core: %s", self.core["reason"])  # asked for

    # -- what the CLI and the metrics endpoint read ----------------------------------
    def addon(self, name: str) -> Addon | None:
        return next((a for a in self.addons if a.name == name), None)

    @property
    def obj(self) -> loader.BPFObject | None:
        return self.kernel.obj

    @property
    def rb(self):
        return self.kernel.rb

    @property
    def ring_bytes(self) -> int:
        return self.kernel.ring_bytes

    @property
    def attached(self) -> list[str]:
        return self.kernel.attached

    @property
    def skipped(self) -> dict[str, str]:
        return self.kernel.skipped

    @property
    def filters(self) -> Filters:
        return self.kernel.filters

    @property
    def _kernel(self) -> dict[str, int]:
        return self.kernel.counters

    @property
    def adaptive(self) -> AdaptiveController | None:
        return self.sampling.controller

    @property
    def tls(self):
        """The running TLS probes (tls.TlsProbes), or None."""
        a = self.addon(TlsPlaintext.name)
        return a.probes if a is not None else None

    @property
    def tls_unavailable(self) -> str:
        a = self.addon(TlsPlaintext.name)
        return a.unavailable if a is not None else ""

    @property
    def inject_unavailable(self) -> str:
        a = self.addon(Injection.name)
        return a.unavailable if a is not None else ""

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        knobs: dict[str, int] = {}
        for a in self.addons:
            knobs.update(a.knobs)
        self.kernel.start(knobs)  # closes what it opened if it fails
        # an h2 connection found mid-stream gets the larger capture too
        self.table.h2_capture = self.kernel.capture_hook()
        begun: list[Addon] = []
        try:
            for a in self.addons:
                begun.append(a)
                self._start_addon(a)
        except BaseException:
            for a in reversed(begun):
                a.close()
            self.kernel.close()
            raise
        self._running = [a for a in self.addons if not a.unavailable]
        self._drains = tuple(a.drain for a in self._running if a.drains)
        self.started_at = self.kernel.started_at = time.time()
        self._last_poll = time.monotonic()

    def _start_addon(self, a: Addon) -> None:
        """An add-on is an extra: if it cannot run, say why in one line and
        trace the rest."""
        try:
            a.start(self.kernel, self.table)
        except loader.LoaderError as e:
            a.close()
            a.unavailable = str(e)
        if a.unavailable and a.warning:
            log.warning("%s (%s); tracing the rest", a.warning, a.unavailable)

    def separate(self, broker) -> None:
        """Run-time attaching goes through the privileged broker from now on
        (tracer/broker.py: this process keeps no capability)."""
        self.broker = broker
        for a in self._running:
            a.separated(broker)

    def reconfigure(self, filters: Filters, policy: Callable | None,
                    adaptive: AdaptiveController | None) -> None:
        """SIGHUP: new filters and sampling without detaching anything. The
        adaptive controller keeps its state when its settings are unchanged."""
        self.kernel.apply_filters(filters)
        self.table.correlator.policy = policy
        self.sampling.reconfigure(adaptive)

    def poll_once(self, timeout_ms: int = 100) -> int:
        kernel = self.kernel
        rb = kernel.rb
        rb.poll(timeout_ms)
        fill = rb.available()  # pressure, for adaptive sampling: two loads from the mmap
        if fill > kernel.fill_max:
            kernel.fill_max = fill
        for drain in self._drains:
            drain()  # e.g. injections precede the writes that carry them
        n = rb.consume_events(self._handler, self.stats, CONSUME_BATCH)
        self.stats.events_delivered += n
        self._polled()
        return n

    def _polled(self) -> None:
        # from the end of start() on: what runs between start() and run() counts too
        now = time.monotonic()
        if self._last_poll and now - self._last_poll > self.max_poll_gap:
            self.max_poll_gap = now - self._last_poll
        self._last_poll = now

    def run(self, duration: float | None = None, stop: threading.Event | None = None,
            on_tick: Callable[[], None] | None = None) -> None:
        """Poll until `duration` seconds pass or `stop` is set."""
        deadline = time.monotonic() + duration if duration else None
        next_house = time.monotonic() + HOUSEKEEPING_S
        for a in self._running:
            a.begin()
        # each wake-up costs (~150 us of CPU here, docs/performance.md): wait
        # long; the kernel wakes us when the ring fills and a signal at once
        wake = getattr(self.kernel.rb, "wake_on_signals", None)
        if wake is not None:
            wake()
        while not (stop and stop.is_set()):
            now = time.monotonic()
            if deadline and now >= deadline:
                break
            until = min(next_house, deadline) if deadline else next_house
            self.poll_once(max(1, min(POLL_MS, int((until - now) * 1000))))
            now = time.monotonic()
            # Housekeeping gives up on contexts by age against the clock: with
            # records still in the ring (a backlog), their evidence may be
            # there. Drain first, late by at most HOUSEKEEPING_MAX_LATE_S.
            if now >= next_house and (not self.kernel.rb.available()
                                      or now >= next_house + HOUSEKEEPING_MAX_LATE_S):
                next_house = now + HOUSEKEEPING_S
                self.housekeeping(time.monotonic_ns())
                if on_tick:
                    on_tick()

    def housekeeping(self, now_ns: int) -> None:
        """Once a second: idle connections, held spans, counters, add-ons."""
        self.table.expire(now_ns, IDLE_EXPIRY_NS)
        self.table.correlator.flush(now_ns)
        self.read_kernel_counters()
        if self.broker is not None:
            self.broker.check()  # gone: said once, what is attached stays traced
        for a in self._running:
            a.tick(now_ns)

    def read_kernel_counters(self) -> dict[str, int]:
        k = self.kernel.read_counters()
        if k:
            for key in self._in_stats:
                setattr(self.stats, key, k[key])
        return k

    def stop(self) -> dict:
        """Detach, drain what is left, close connections, return the summary."""
        self._polled()  # a run loop that never polled shows here
        running, self._running = self._running, []
        if self.broker is not None:
            self.broker.detach()  # its copies of the links go first: ours are then the last
        for a in running:
            a.stop()  # before the kernel side: nothing half-seen, nothing more written
        rb = self.kernel.rb
        if rb is not None:
            self.kernel.detach()
            # the kernel side is quiet now: everything submitted is in the ring
            n = rb.consume_events(self._handler, self.stats)
            self.stats.events_delivered += n
            self.read_kernel_counters()
            for drain in self._drains:
                drain()
            self._drains = ()
            self.table.close_all()
            self.table.correlator.close()
            for a in running:
                a.close()
            self.kernel.close()
        self.stopped_at = self.stopped_at or time.time()
        return self.summary()

    def summary(self) -> dict:
        """The pipeline's Stats, the agent's own figures, the kernel counters
        and each add-on's counters (idle entries for the kinds not in use)."""
        s = self.stats.as_dict()
        dur = max((self.stopped_at or time.time()) - self.started_at, 1e-9)
        s.update({
            "duration_s": round(dur, 3),
            "events_per_s": round(s["events_delivered"] / dur, 1),
            "max_poll_gap_ms": round(self.max_poll_gap * 1000, 1),
            "capture_bytes": self.capture_bytes,
            "core": self.core["core"],
            "clock_offset_ns": self.clock_offset_ns,
            "programs_attached": len(self.kernel.attached),
            "programs_skipped": self.kernel.skipped,
        })
        for key, value in self.kernel.summary({a.name for a in self.addons}).items():
            s.setdefault(key, value)  # events_seen, events_dropped: Stats has them already
        in_use = {type(a) for a in self.addons}
        for kind in ADDON_KINDS:
            if kind not in in_use:
                s.update(kind.idle())
        for a in self.addons:
            s.update(a.counters())
        return s

    def __enter__(self) -> Tracer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
