"""Least privilege: after load and attach, keep only the capabilities the
features in use still need, set no_new_privs, optionally become another user.

The sets below are the single source of truth: the systemd unit, the container
and the DaemonSet under deploy/ list START (tests/unit/test_deploy.py checks),
and `drop()` keeps `runtime_caps(...)`.

Why so little remains (measured on 6.18 and Debian's 6.1, see docs/privileges-and-deployment.md):
- the ring buffers are read through mmaps made at start, and epoll: no checks;
- bpf() map lookups/updates on fds we already hold check the fd's mode only
  (capabilities are checked when maps and programs are created);
- BPF program statistics (bpf_obj_get_info_by_fd) need no capability;
- the Prometheus port is bound before the drop.
What does need capabilities after start is attaching uprobes to libraries
found later (TLS discovery) and reading other processes' /proc/<pid>/maps,
exe and root: see RUNTIME. Which capability a uprobe takes changed across
kernels (CAP_PERFMON from 5.8, CAP_SYS_ADMIN after a fix: measured on 6.18
and Debian's 6.1.0-56), and whether bpf() commands on fds already held
need CAP_BPF (kernels that checked every command under
unprivileged_bpf_disabled): both are found by trying, in a thread whose own
sets are cut down (`probe_runtime_needs`).

Capabilities are per thread: `drop()` runs in the main thread before the
export threads start; threads started earlier are reported (see
`threads_with_caps`), and the metrics server re-homes its thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import pwd
import struct
import threading
import time
from dataclasses import dataclass, field

# include/uapi/linux/capability.h (stable ABI)
CAP_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
CAP_NAMES = {v: k for k, v in CAP_NUMBERS.items()}

# What start-up (load and attach) needs: the set a deployment grants.
START: dict[str, str] = {
    "CAP_BPF": "create maps, load BTF and programs",
    "CAP_PERFMON": "tracing programs (tracepoint, uprobe), perf_event_open for their links",
    "CAP_SYS_ADMIN": "uprobes (TLS) where the kernel asks for it (6.18: perf_uprobe_event_init)",
    # with CAP_SYS_ADMIN granted this one is redundant (bpf_net_capable); measured
    "CAP_NET_ADMIN": "--inject: load sockops/sk_msg and attach to the cgroup",
    "CAP_SYS_PTRACE": "read /proc/<pid>/maps, exe and root of other users' processes",
    "CAP_DAC_READ_SEARCH": "read libraries and tracefs event ids whatever their modes",
    "CAP_SETPCAP": "shrink the bounding set after attach",
    "CAP_SETUID": "--user: switch to the unprivileged user",
    "CAP_SETGID": "--user: switch to the unprivileged group",
}
# Not needed on 6.x: CAP_SYS_RESOURCE (memlock; maps are charged to the memcg).
# CAP_SYS_ADMIN also mounts tracefs/securityfs when they are not mounted.

# What stays after the drop, per feature still in use.
# UPROBE stands for the capability that probe_runtime_needs() found.
UPROBE = "UPROBE"
RUNTIME: dict[str, dict[str, str]] = {
    "tls_discovery": {
        UPROBE: "perf_event_open of uprobes on libraries found later (new execs)",
        "CAP_SYS_PTRACE": "/proc/<pid>/maps, exe and root of processes that exec later",
        "CAP_DAC_READ_SEARCH": "open those libraries whatever their modes",
    },
    "exe_names": {  # --service-name EXE=NAME: /proc/<pid>/exe of every traced process
        "CAP_SYS_PTRACE": "readlink /proc/<pid>/exe of other users' processes",
    },
    "span_stacks": {  # --span-stacks: symbolized while tracing (tracer/symbols)
        "CAP_SYS_PTRACE": "/proc/<pid>/maps and root of the traced processes",
        "CAP_DAC_READ_SEARCH": "their executables and libraries whatever their modes",
    },
}

PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def mask(names) -> int:
    m = 0
    for n in names:
        m |= 1 << CAP_NUMBERS[n]
    return m


def names(m: int) -> list[str]:
    return [CAP_NAMES.get(i, f"CAP_{i}") for i in range(64) if m >> i & 1]


@dataclass(frozen=True)
class KernelNeeds:
    """What this kernel asks for after start (probe_runtime_needs)."""

    uprobe: str = "CAP_SYS_ADMIN"  # as on 6.18; CAP_PERFMON on older kernels
    bpf_cmds: bool = False  # map commands on open fds need CAP_BPF (not on 6.1, 6.18)


def runtime_caps(*, tls_discovery: bool, exe_names: bool = False, span_stacks: bool = False,
                 kernel: KernelNeeds = KernelNeeds()) -> dict[str, str]:
    """Capability -> why, for the features still working after start."""
    keep: dict[str, str] = {}
    if kernel.bpf_cmds:
        keep["CAP_BPF"] = "map lookups and updates (this kernel checks every bpf() command)"
    for feature, on in (("tls_discovery", tls_discovery), ("exe_names", exe_names),
                        ("span_stacks", span_stacks)):
        if on:
            for cap, why in RUNTIME[feature].items():
                keep.setdefault(kernel.uprobe if cap == UPROBE else cap, why)
    return keep


# `tracer run` splits after attach (tracer/broker.py): the features here are the
# broker's, which attaches, reads /proc and opens files for the agent; the agent
# keeps runtime_caps() with none of them (only CAP_BPF where the kernel checks
# every bpf() command).
BROKER_FEATURES = ("tls_discovery", "exe_names", "span_stacks")


def broker_caps(*, tls_discovery: bool, exe_names: bool = False, span_stacks: bool = False,
                kernel: KernelNeeds = KernelNeeds()) -> dict[str, str]:
    """Capability -> why, for the privileged broker of `tracer run`: what
    attaching to processes started later, their /proc entries and their
    files need. Its map commands (the filter maps, read to check a pid) are
    lookups only, done for exe names and stacks."""
    return runtime_caps(tls_discovery=tls_discovery, exe_names=exe_names,
                        span_stacks=span_stacks,
                        kernel=KernelNeeds(uprobe=kernel.uprobe,
                                           bpf_cmds=kernel.bpf_cmds and (exe_names
                                                                         or span_stacks)))


# `tracer run` started as root runs its agent as this user unless --user names
# another ("--user root" keeps root); started as another user it stays that user.
DEFAULT_USER = "nobody"


def default_user() -> str | None:
    """The user the agent becomes when --user is not given: DEFAULT_USER if
    this process runs as root and the user exists, else None (stay)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(DEFAULT_USER)
    except KeyError:
        return None
    return DEFAULT_USER


def user_ids(user: str) -> tuple[int, int, str]:
    """(uid, gid, name) of NAME|UID (ValueError, one line, if unknown)."""
    return _resolve_user(user)


def dir_writable_by(path: str, uid: int, gid: int) -> bool:
    """Whether uid (primary group gid, no other groups: the drop clears them)
    may create and rename files in the directory `path`, by the mode bits of
    it and its parents (ACLs are not read). Capabilities aside: the agent
    keeps none."""
    path = os.path.abspath(path)
    parts = [path]
    while parts[-1] != "/":
        parts.append(os.path.dirname(parts[-1]))
    for i, p in enumerate(parts):
        try:
            st = os.stat(p)
        except OSError:
            return False
        if st.st_uid == uid:
            bits = st.st_mode >> 6
        elif st.st_gid == gid:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        need = 0o3 if i == 0 else 0o1  # write+search the directory, search its parents
        if bits & need != need:
            return False
    return True


def start_caps(*, inject: bool = False, user: bool = False) -> list[str]:
    """The start-up set for a given command line (all of START for deployments)."""
    skip = set()
    if not inject:
        skip.add("CAP_NET_ADMIN")
    if not user:
        skip |= {"CAP_SETUID", "CAP_SETGID"}
    return [c for c in START if c not in skip]


def parse_status(text: str) -> dict:
    """The capability and identity lines of /proc/<pid>/status."""
    out: dict = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            out[key] = int(value, 16)
        elif key == "NoNewPrivs":
            out[key] = int(value)
        elif key in ("Uid", "Gid"):
            out[key] = [int(x) for x in value.split()]
    return out


def read_status(pid: int | str = "self") -> dict:
    with open(f"/proc/{pid}/status") as f:
        return parse_status(f.read())


# ---- system calls -------------------------------------------------------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                                ctypes.c_ulong]
    return _libc


def _prctl(op: int, a: int = 0, b: int = 0) -> int:
    ret = _lib().prctl(op, a, b, 0, 0)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def capset(effective: int, permitted: int, inheritable: int = 0) -> None:
    """capset(2) of the calling thread (version 3: two 32-bit words)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = effective >> (32 * i) & 0xFFFFFFFF
        data[i].permitted = permitted >> (32 * i) & 0xFFFFFFFF
        data[i].inheritable = inheritable >> (32 * i) & 0xFFFFFFFF
    if _lib().capset(ctypes.byref(hdr), data) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAP_NAMES)


def _in_thread_with(caps: list[str], fn):
    """fn() in a new thread holding only `caps` (capabilities are per thread,
    so the process keeps its sets). Returns fn's result or the OSError."""
    out: list = [None, 0]

    def body():
        out[1] = threading.get_native_id()
        try:
            capset(mask(caps), mask(caps))
            out[0] = fn()
        except Exception as e:  # noqa: BLE001 - handed back to the caller
            out[0] = e

    t = threading.Thread(target=body, name="cap-probe")
    t.start()
    # a later setresuid is broadcast by glibc to every thread, and one that
    # fails (this one, with no CAP_SETUID) makes glibc abort the process
    join_task(t)
    return out[0]


def join_task(t: threading.Thread, timeout: float = 2.0) -> None:
    """join(), then wait until the kernel task is gone too: join() returns
    before the thread has left /proc/self/task, and until then it still holds
    its credentials (a thread started before the drop keeps its bounding set)."""
    tid = t.native_id
    t.join()
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/self/task/{tid}") and time.monotonic() < deadline:
        time.sleep(0.001)


def _perf_uprobe_open(path: str) -> int:
    """perf_event_open of a disabled uprobe at offset 0 of `path` (the ELF
    header: never executed), closed at once."""
    with open("/sys/bus/event_source/devices/uprobe/type") as f:
        pmu = int(f.read())
    attr = (ctypes.c_uint8 * 128)()
    cpath = ctypes.create_string_buffer(path.encode())
    struct.pack_into("<IIQ", attr, 0, pmu, 112, 0)  # type, size (VER5), config
    struct.pack_into("<Q", attr, 40, 1)  # disabled
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(cpath), 0)  # uprobe_path, offset
    nr = {"x86_64": 298, "aarch64": 241}.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, "perf_event_open number unknown here")
    fd = _lib().syscall(nr, attr, -1, 0, -1, 8)  # pid -1, cpu 0, PERF_FLAG_FD_CLOEXEC
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    os.close(fd)
    return fd


def probe_runtime_needs(map_lookup=None, library: str | None = None) -> KernelNeeds:
    """Try, in a thread cut down to the candidate capability, what the agent
    does after start: a uprobe with CAP_PERFMON only; `map_lookup()` (a
    lookup on a map we hold, raising loader.MapError) with none."""
    uprobe = "CAP_SYS_ADMIN"
    if library and not isinstance(_in_thread_with(["CAP_PERFMON"],
                                                  lambda: _perf_uprobe_open(library)),
                                  Exception):
        uprobe = "CAP_PERFMON"
    bpf_cmds = False
    if map_lookup is not None:
        r = _in_thread_with([], map_lookup)
        bpf_cmds = getattr(r, "err", getattr(r, "errno", 0)) == errno.EPERM
    return KernelNeeds(uprobe=uprobe, bpf_cmds=bpf_cmds)


# ---- the drop -----------------------------------------------------------------------

@dataclass
class DropResult:
    kept: dict[str, str]  # capability -> why
    user: str = ""
    warnings: list[str] = field(default_factory=list)  # one line each, also logged
    threads_with_caps: list[str] = field(default_factory=list)  # "tid comm"

    def as_dict(self) -> dict:
        return {"kept": sorted(self.kept), "user": self.user,
                "warnings": len(self.warnings),
                "threads_with_caps": len(self.threads_with_caps)}

    def report(self) -> tuple[list[str], dict]:
        """What `run` and `funcs` show (one line, then each warning) and put
        in their summaries under "privileges"."""
        return ([describe(self)] + [f"privileges: {w}" for w in self.warnings],
                {"dropped": True, **self.as_dict()})


def _resolve_user(user: str) -> tuple[int, int, str]:
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"--user {user}: no such user (create it, or pass an existing "
                         "name or uid)") from None
    return pw.pw_uid, pw.pw_gid, pw.pw_name


def check_user(user: str) -> None:
    """Raise ValueError (one line) before tracing starts when --user is unusable."""
    _resolve_user(user)


def drop(keep: dict[str, str], user: str | None = None) -> DropResult:
    """Keep only `keep` in the permitted, effective and bounding sets of the
    calling thread; clear inheritable and ambient; no_new_privs; then
    optionally become `user`. Failures are warnings (one line each, in
    res.warnings): the tracer goes on with what it has."""
    res = DropResult(kept=dict(keep))
    keep_mask = mask(keep)

    def warn(msg: str) -> None:
        res.warnings.append(msg)

    # bounding set first: it needs CAP_SETPCAP, which goes away below
    for cap in range(last_cap() + 1):
        if keep_mask >> cap & 1:
            continue
        try:
            if _prctl(PR_CAPBSET_READ, cap):
                _prctl(PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno == errno.EINVAL:
                continue  # unknown to this kernel
            warn(f"bounding set keeps the capabilities from {CAP_NAMES.get(cap, cap)} on: "
                 f"{e.strerror} (grant CAP_SETPCAP to shrink it)")
            break
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        warn(f"ambient set not cleared: {e.strerror}")
    if user is not None:
        uid, gid, res.user = _resolve_user(user)
        need = mask(["CAP_SETUID", "CAP_SETGID"])
        short = threads_with_caps(0, lacking=need)
        if short:  # glibc broadcasts set*id to every thread and aborts if one fails
            warn(f"--user {user}: thread(s) {', '.join(short)} lack CAP_SETUID/CAP_SETGID; "
                 f"staying uid {os.getuid()}")
            user, res.user = None, ""
    if user is not None:
        try:
            _prctl(PR_SET_KEEPCAPS, 1)  # permitted survives the uid change
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)  # glibc applies it to every thread
            _prctl(PR_SET_KEEPCAPS, 0)
        except OSError as e:
            warn(f"--user {user}: {e.strerror}; staying {os.getuid()}")
            res.user = ""
    have = read_status().get("CapPrm", 0)
    if keep_mask & ~have:
        warn(f"not held at start, so not kept: {', '.join(names(keep_mask & ~have))}")
        keep_mask &= have
        res.kept = {k: v for k, v in res.kept.items() if mask([k]) & keep_mask}
    try:
        capset(keep_mask, keep_mask, 0)
    except OSError as e:
        warn(f"capabilities not dropped: {e.strerror}")
    try:
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError as e:
        warn(f"no_new_privs not set: {e.strerror}")
    return res


def check_threads(res: DropResult) -> None:
    """Capabilities are per thread: a thread started before the drop keeps its
    sets (unless --user changed the uid, which glibc applies to all threads).
    Call once such threads are re-homed; each one left is a warning."""
    res.threads_with_caps = threads_with_caps(mask(res.kept))
    if res.threads_with_caps:
        msg = (f"{len(res.threads_with_caps)} thread(s) started before the drop keep "
               f"capabilities: {', '.join(res.threads_with_caps)}")
        res.warnings.append(msg)


def threads_with_caps(keep_mask: int, lacking: int = 0) -> list[str]:
    """Threads of this process whose effective or permitted set exceeds
    keep_mask (or, with `lacking`, whose effective set misses one of those)."""
    out = []
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        try:
            st = read_status(f"self/task/{tid}")
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue  # exited meanwhile
        if lacking:
            if st.get("CapEff", 0) & lacking != lacking:
                out.append(f"{tid} {comm}")
        elif (st.get("CapEff", 0) | st.get("CapPrm", 0)) & ~keep_mask:
            out.append(f"{tid} {comm}")
    return out


def describe(res: DropResult) -> str:
    """The one line the CLI prints."""
    kept = ", ".join(sorted(res.kept)) or "none"
    who = f"; running as {res.user}" if res.user else ""
    return f"privileges dropped: kept {kept}; no_new_privs{who}"


__all__ = ["START", "RUNTIME", "BROKER_FEATURES", "broker_caps", "DEFAULT_USER", "default_user",
           "user_ids", "dir_writable_by", "KernelNeeds", "probe_runtime_needs", "runtime_caps", "start_caps", "drop", "DropResult", "describe",
           "check_threads", "join_task", "parse_status", "read_status", "mask", "names", "check_user", "threads_with_caps"]
