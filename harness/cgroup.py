"""cgroups for the process under test: CPU accounting (every thread, exited
ones too, in ns or µs, not 10 ms ticks) and a CPU quota (overload).

CpuAccount makes a cgroup and wraps a command so that it enters the group
before exec: its whole life is counted, start-up included. v1 `cpuacct`
(`cpuacct.usage`, ns) when mounted, else cgroup v2 (`cpu.stat` usage_usec,
present in every v2 group). CpuQuota holds a process to a share of a core:
on the accounting group itself when that group also has the cpu controller
(v2, or v1 with cpu and cpuacct mounted together), else in its own v1 group.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
V1_CPUACCT = ROOT / "cpuacct"
V1_CPU = ROOT / "cpu"
V2_ROOTS = (ROOT, ROOT / "unified")
PERIOD_US = 100_000


def _v2_root() -> Path | None:
    for root in V2_ROOTS:
        if (root / "cgroup.controllers").exists() and (root / "cgroup.procs").exists():
            return root
    return None


def _rmdir(path: Path, tries: int = 20) -> None:
    for _ in range(tries):  # a process may still be leaving the group
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


class CpuAccount:
    """A cgroup counting the CPU of the command started through wrap()."""

    def __init__(self, name: str) -> None:
        if (V1_CPUACCT / "cpuacct.usage").exists():
            self.v2 = False
            self.path = V1_CPUACCT / name
        else:
            root = _v2_root()
            if root is None:
                raise OSError("no cgroup CPU accounting (v1 cpuacct or v2)")
            self.v2 = True
            self.path = root / name
        self.path.mkdir(exist_ok=True)

    def attach(self, pid: int) -> None:
        """Nothing to do: wrap() put the process in the group."""

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run by a shell that first moves itself into the group, then
        execs argv (same pid, so Popen.pid is the command's)."""
        return ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', str(self.path / "cgroup.procs"),
                *argv]

    def usage_s(self) -> float:
        """CPU seconds used in the group so far (NaN once it is gone)."""
        try:
            if not self.v2:
                return int((self.path / "cpuacct.usage").read_text()) / 1e9
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            pass
        return math.nan

    def close(self) -> None:
        _rmdir(self.path)


class ProcAccount:
    """The fallback without cgroups: the sum of the process's live threads'
    /proc/PID/task/*/schedstat run times (ns). Threads that exited and
    children are not counted."""

    def __init__(self) -> None:
        self.pid = 0

    def wrap(self, argv: list[str]) -> list[str]:
        return argv

    def attach(self, pid: int) -> None:
        self.pid = pid

    def usage_s(self) -> float:
        total, found = 0, False
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return math.nan
        for tid in tasks:
            try:
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as fh:
                    total += int(fh.read().split()[0])
                    found = True
            except (OSError, ValueError, IndexError):
                continue
        return total / 1e9 if found else math.nan

    def close(self) -> None:
        pass


class UsageRecorder:
    """(unix time, CPU seconds) of an account every `interval` s on a thread,
    to interpolate the CPU at an instant known only later (the load start
    the load generator reports)."""

    def __init__(self, account: CpuAccount, interval: float = 0.05) -> None:
        self.account = account
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-usage", daemon=True)

    def _loop(self) -> None:
        while True:
            self.samples.append((time.time(), self.account.usage_s()))
            if self._stop.wait(self.interval):
                return

    def start(self) -> UsageRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def at(self, t: float) -> float:
        """CPU seconds at unix time t, linearly interpolated (NaN outside)."""
        pts = [(w, u) for w, u in self.samples if not math.isnan(u)]
        for (w0, u0), (w1, u1) in zip(pts, pts[1:], strict=False):
            if w0 <= t <= w1:
                return u0 if w1 == w0 else u0 + (u1 - u0) * (t - w0) / (w1 - w0)
        return math.nan


class CpuQuota:
    """Holds a process at `cores` of CPU until release(); close() removes
    any group made for it."""

    def __init__(self, name: str, cores: float, account: CpuAccount | None = None) -> None:
        self.quota_us = max(int(cores * PERIOD_US), 1000)
        self.own = True
        if account is not None and (account.path / "cpu.cfs_quota_us").exists():
            self.path, self.own, self.v2 = account.path, False, False  # v1 cpu,cpuacct
        elif account is not None and account.v2:
            ctl = account.path.parent / "cgroup.subtree_control"
            if "cpu" not in ctl.read_text().split():
                ctl.write_text("+cpu")
            self.path, self.own, self.v2 = account.path, False, True
        elif (V1_CPU / "cpu.cfs_quota_us").exists():
            self.path, self.v2 = V1_CPU / name, False
            self.path.mkdir(exist_ok=True)
        elif (root := _v2_root()) is not None and "cpu" in (
                root / "cgroup.controllers").read_text().split():
            ctl = root / "cgroup.subtree_control"
            if "cpu" not in ctl.read_text().split():
                ctl.write_text("+cpu")
            self.path, self.v2 = root / name, True
            self.path.mkdir(exist_ok=True)
        else:
            raise OSError("no cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 cpu.max)")
        self._limit(True)

    def _limit(self, on: bool) -> None:
        if self.v2:
            (self.path / "cpu.max").write_text(
                f"{self.quota_us if on else 'max'} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us if on else -1))

    def add(self, pid: int) -> None:
        if self.own:
            (self.path / "cgroup.procs").write_text(str(pid))
        else:
            self._limit(True)

    def release(self, pid: int) -> None:
        """Lift the limit: the drain at shutdown is not steady state (a
        throttled drain of a full ring would outlast the stop limit)."""
        try:
            if self.own:
                (self.path.parent / "cgroup.procs").write_text(str(pid))
            else:
                self._limit(False)
        except OSError:
            pass  # already gone

    def throttled_s(self) -> float:
        """Seconds the group was throttled (cpu.stat), NaN if unknown."""
        try:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text()
                        .splitlines() if line.count(" ") == 1)
        except OSError:
            return math.nan
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        if "throttled_time" in stat:
            return int(stat["throttled_time"]) / 1e9
        return math.nan

    def close(self) -> None:
        if self.own:
            _rmdir(self.path, tries=1)  # a process still inside: the next mkdir reuses it
        else:
            try:
                self._limit(False)
            except OSError:
                pass
