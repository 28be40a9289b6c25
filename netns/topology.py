"""Network-namespace topology for the harness: client -> frontend -> backend.

Three uniquely named namespaces joined by two veth pairs, addresses from the
RFC 2544 benchmarking range 198.18.0.0/15, so two runs can coexist and nothing
leaks onto a real network. ``Topology`` is a context manager: whatever happens
inside (exception, Ctrl-C), leaving it kills every process it spawned and
removes every namespace and veth it made.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROLES = ("client", "frontend", "backend")
NETNS_RUN_DIR = Path("/run/netns")
# Interface names are limited to 15 bytes (IFNAMSIZ - 1).
_IFNAME_MAX = 15


@dataclass(frozen=True)
class Link:
    """One veth pair: the ``a`` end lives in ``ns_a``, the ``b`` end in ``ns_b``."""

    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    addr_a: str
    addr_b: str
    prefixlen: int = 30


@dataclass
class Topology:
    """client (198.18.1.1) <-> (198.18.1.2) frontend (198.18.2.1) <-> (198.18.2.2) backend."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    prefix: str = "ht"
    term_grace_s: float = 3.0
    _created_ns: list[str] = field(default_factory=list, init=False)
    _created_ifs: list[str] = field(default_factory=list, init=False)
    _procs: list[subprocess.Popen] = field(default_factory=list, init=False)

    # Fixed addresses: the namespaces are private, so the same addresses can be
    # reused by concurrent runs without clashing.
    ADDRS = {
        "client": "198.18.1.1",
        "frontend": "198.18.1.2",
        "frontend_down": "198.18.2.1",
        "backend": "198.18.2.2",
    }

    # --- names -------------------------------------------------------------
    @property
    def run_prefix(self) -> str:
        return f"{self.prefix}-{self.tag}"

    def ns(self, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown namespace role {role!r}; expected one of {ROLES}")
        return f"{self.run_prefix}-{role}"

    @property
    def names(self) -> dict[str, str]:
        return {role: self.ns(role) for role in ROLES}

    @property
    def links(self) -> list[Link]:
        # veth names carry the run tag so leftovers are attributable: "ht<tag>c0".
        p = f"{self.prefix}{self.tag}"
        return [
            Link(self.ns("client"), self.ns("frontend"), f"{p}c0", f"{p}f0",
                 self.ADDRS["client"], self.ADDRS["frontend"]),
            Link(self.ns("frontend"), self.ns("backend"), f"{p}f1", f"{p}b0",
                 self.ADDRS["frontend_down"], self.ADDRS["backend"]),
        ]

    def inode(self, role: str) -> int:
        """Inode of the namespace: what the tracer reports as a span's ``netns``."""
        return os.stat(NETNS_RUN_DIR / self.ns(role)).st_ino

    # --- lifecycle ---------------------------------------------------------
    def __enter__(self) -> Topology:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        from pyroute2 import IPRoute, NetNS, netns

        for link in self.links:
            for name in (link.if_a, link.if_b):
                if len(name) > _IFNAME_MAX:
                    raise ValueError(f"interface name too long: {name}")
        for role in ROLES:
            netns.create(self.ns(role))
            self._created_ns.append(self.ns(role))
        with IPRoute() as ipr:
            for link in self.links:
                # Create the pair in the root namespace, then move each end:
                # until moved, teardown finds the ends here by name.
                self._created_ifs += [link.if_a, link.if_b]
                ipr.link("add", ifname=link.if_a, kind="veth", peer={"ifname": link.if_b})
                for ifname, ns in ((link.if_a, link.ns_a), (link.if_b, link.ns_b)):
                    idx = ipr.link_lookup(ifname=ifname)[0]
                    ipr.link("set", index=idx, net_ns_fd=ns)
        for role in ROLES:
            with NetNS(self.ns(role)) as nsr:
                lo = nsr.link_lookup(ifname="lo")[0]
                nsr.link("set", index=lo, state="up")
        for link in self.links:
            for ifname, ns, addr in ((link.if_a, link.ns_a, link.addr_a),
                                     (link.if_b, link.ns_b, link.addr_b)):
                with NetNS(ns) as nsr:
                    idx = nsr.link_lookup(ifname=ifname)[0]
                    nsr.addr("add", index=idx, address=addr, prefixlen=link.prefixlen)
                    nsr.link("set", index=idx, state="up")
        log.debug("topology %s up", self.run_prefix)

    def down(self) -> None:
        """Kill spawned processes, then anything else left in our namespaces, then
        remove the namespaces (which destroys the veths in them) and any veth
        still in the root namespace. Only "already gone" errors are ignored."""
        from pyroute2 import IPRoute, netns
        from pyroute2.netlink.exceptions import NetlinkError

        for proc in reversed(self._procs):
            _kill_group(proc, self.term_grace_s)
        self._procs.clear()
        for name in self._created_ns:
            for pid in _pids_in_netns(name):
                _signal_pid(pid, signal.SIGKILL)
        for name in self._created_ns:
            try:
                netns.remove(name)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
        self._created_ns.clear()
        if self._created_ifs:
            with IPRoute() as ipr:
                for ifname in self._created_ifs:
                    idx = ipr.link_lookup(ifname=ifname)
                    if not idx:
                        continue
                    try:
                        ipr.link("del", index=idx[0])
                    except NetlinkError as e:
                        if e.code != errno.ENODEV:
                            raise
            self._created_ifs.clear()
        log.debug("topology %s down", self.run_prefix)

    # --- processes ---------------------------------------------------------
    def spawn(self, role: str, argv: Sequence[str], **popen_kw) -> subprocess.Popen:
        """Start ``argv`` inside namespace ``role`` in its own process group.

        ``ip netns exec`` execs the command, so the returned pid is the
        command's own pid (psutil can measure it directly)."""
        cmd = ["ip", "netns", "exec", self.ns(role), *argv]
        proc = subprocess.Popen(cmd, start_new_session=True, **popen_kw)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM,
             timeout: float | None = None) -> int | None:
        """Signal a spawned process group and wait; escalate to SIGKILL on timeout."""
        _kill_group(proc, self.term_grace_s if timeout is None else timeout, sig)
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode

    def leftovers(self) -> dict[str, list[str]]:
        """What of this run still exists: namespaces, root-ns veths, processes."""
        nss = [n for n in _list_netns() if n.startswith(self.run_prefix)]
        ifs = [n for n in _list_root_links() if n.startswith(f"{self.prefix}{self.tag}")]
        pids = [str(p.pid) for p in self._procs if p.poll() is None]
        for name in nss:
            pids += [str(p) for p in _pids_in_netns(name)]
        return {"netns": nss, "links": ifs, "pids": pids}


def _list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def _list_root_links() -> list[str]:
    return sorted(os.listdir("/sys/class/net"))


def _pids_in_netns(name: str) -> list[int]:
    res = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                         check=False)
    return [int(tok) for tok in res.stdout.split() if tok.isdigit()]


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_group(proc: subprocess.Popen, grace: float, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    # Children of the group may outlive the leader (gunicorn workers): kill the
    # whole group unconditionally; ESRCH means it is already empty.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.warning("process %d did not exit after SIGKILL", proc.pid)
