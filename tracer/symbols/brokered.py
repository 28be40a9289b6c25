"""Symbolizing in the agent once split from the privileged broker
(tracer/broker.py): it may not read other processes' /proc/<pid>/maps nor
files under directories it cannot search, so the broker opens them
(`stack_maps`, then `stack_module` for a file it read in those maps) and
passes the fds; the agent reads and parses (tracer/span_stacks.py)."""

from __future__ import annotations

import os
import time

from .elf import ElfSymbols
from .procmaps import ProcMaps
from .symbolizer import Symbolizer


def _maps_text(broker, pid: int) -> str:
    fd, why = broker.open_file("stack_maps", pid=pid)
    if fd is None:
        raise OSError(why)
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as f:
        return f.read()


class BrokerMaps(ProcMaps):
    """ProcMaps whose maps and modules come through the broker."""

    broker = None

    def refresh(self, min_interval_s: float = 0.0) -> bool:
        now = time.monotonic()
        if now - self._refreshed_at < min_interval_s:
            return False
        self._refreshed_at = now
        try:
            fresh = ProcMaps.parse(self.pid, _maps_text(self.broker, self.pid))
        except OSError:
            return False
        self._set(fresh.mappings)
        self.refreshes += 1
        return True

    def elf(self, m):
        if m in self._elfs:
            return self._elfs[m]
        elf = None
        fd, why = (None, "deleted") if m.path.endswith(" (deleted)") else \
            self.broker.open_file("stack_module", pid=self.pid, path=m.path)
        if fd is None:
            self.open_errors[m.path] = why
        else:
            try:  # re-opened through our own fd: no directory on the way is searched
                elf = ElfSymbols.open(f"/proc/self/fd/{fd}")
            except (OSError, ValueError) as e:
                self.open_errors[m.path] = str(e).splitlines()[0] if str(e) else type(e).__name__
            finally:
                os.close(fd)
        self._elfs[m] = elf
        return elf


class BrokerSymbolizer(Symbolizer):
    """Symbolizer of the agent once split: /proc and files through the broker."""

    def __init__(self, broker, **kw) -> None:
        super().__init__(**kw)
        self.broker = broker

    def _read(self, pid: int) -> ProcMaps:
        self.counters["maps_reads"] += 1
        try:
            m = BrokerMaps.parse(pid, _maps_text(self.broker, pid))
        except OSError:
            self.counters["maps_errors"] += 1
            m = BrokerMaps(pid, [])
        m.broker = self.broker
        self._maps[pid] = m
        self._maps.move_to_end(pid)
        while len(self._maps) > self._max_pids:
            self._maps.popitem(last=False)
        return m
