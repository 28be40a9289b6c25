"""The agent's seccomp filter (issue 19): an allow-list of system calls, built
with libseccomp (libseccomp.so.2, the system library, through ctypes like
libbpf) and loaded with TSYNC, so every thread of the agent has it.

A call outside the list kills the whole agent (SECCOMP_RET_KILL_PROCESS,
signal SIGSYS): the broker sees its peer vanish, detaches everything and says
so in one line (tracer/broker.py). Nothing is ever allowed as a fallback: if
the filter cannot be built or loaded, `install` raises and the agent does not
start tracing.

The list is what the agent does after start (measured by running the e2e
suites under it, docs/privileges-and-deployment.md): read the rings (mmap,
epoll), map commands on the fds it holds, its files and sockets (spans,
exports, /metrics), threads (exporters, the metrics server), /proc reads.
Left out, among others: execve, ptrace, mount, perf_event_open, bpf program
loads, setuid and capset (the drop is done before the filter is loaded),
process_vm_*, kill of another process.
"""

from __future__ import annotations

import ctypes
import errno
import os

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000


def SCMP_ACT_ERRNO(e: int) -> int:  # noqa: N802 (libseccomp's name)
    return 0x00050000 | (e & 0xFFFF)


SCMP_FLTATR_ACT_BADARCH = 2
SCMP_FLTATR_CTL_NNP = 3
SCMP_FLTATR_CTL_TSYNC = 4
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
CLONE_THREAD = 0x00010000

# enum bpf_cmd (uapi): commands on fds the agent already holds
BPF_CMDS = {
    "BPF_MAP_LOOKUP_ELEM": 1,
    "BPF_MAP_UPDATE_ELEM": 2,
    "BPF_MAP_DELETE_ELEM": 3,
    "BPF_MAP_GET_NEXT_KEY": 4,
    "BPF_PROG_DETACH": 9,  # inject's close (sk_msg); the kernel refuses it without caps
    "BPF_OBJ_GET_INFO_BY_FD": 15,  # /metrics: per-program run time
}

# Plain allow, no argument checked.
ALLOW = (
    # memory, the rings' mmaps, the interpreter
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "rt_sigreturn",
    "rt_sigaction", "rt_sigprocmask", "sigaltstack", "futex", "set_robust_list",
    "rseq", "sched_yield", "sched_getaffinity", "getrandom", "membarrier",
    "exit", "exit_group", "restart_syscall",
    # time
    "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "clock_getres",
    # poll and wake-ups
    "poll", "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "eventfd2", "pipe2",
    # files: spans, summary, /proc, lazy imports, the config on SIGHUP
    "read", "write", "pread64", "pwrite64", "readv", "writev", "openat", "close",
    "lseek", "fstat", "newfstatat", "statx", "stat", "lstat", "readlink", "readlinkat",
    "getdents64", "fcntl", "ioctl", "dup", "dup2", "dup3", "access", "faccessat",
    "faccessat2", "rename", "renameat", "renameat2", "unlink", "unlinkat", "fsync",
    "fdatasync", "ftruncate", "getcwd", "fadvise64", "flock", "mkdir", "close_range",
    "statfs", "fstatfs",
    # sockets: exports, /metrics, the broker channel
    "socket", "connect", "bind", "listen", "accept", "accept4", "sendto", "recvfrom",
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "getsockname",
    "getpeername", "setsockopt", "getsockopt", "socketpair",
    # identity, limits, scheduling (read only)
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid",
    "getgroups", "getresuid", "getresgid", "prlimit64", "getrlimit", "uname",
    "sysinfo", "getrusage", "times", "prctl", "capget", "wait4", "set_tid_address",
    "sched_getparam", "sched_getscheduler", "getpriority",
    # the BPF map commands, checked below
)


class SeccompError(OSError):
    pass


_lib = None


def _libseccomp() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise SeccompError(errno.ENOENT, f"cannot load libseccomp.so.2 ({e}): install it "
                               "with 'apt-get install libseccomp2'") from None
        P, U32, INT = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
        for name, args, res in (
                ("seccomp_init", [U32], P),
                ("seccomp_release", [P], None),
                ("seccomp_load", [P], INT),
                ("seccomp_attr_set", [P, INT, U32], INT),
                ("seccomp_syscall_resolve_name", [ctypes.c_char_p], INT),
                ("seccomp_rule_add_array", [P, U32, INT, ctypes.c_uint, P], INT)):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        _lib = lib
    return _lib


class _ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def rules(pid: int) -> list[tuple[str, int, list[tuple[int, int, int, int]]]]:
    """(syscall, action, [(arg, op, a, b)]) of the agent's filter; `pid` is
    the agent itself, the only process it may signal."""
    out: list[tuple[str, int, list]] = [(name, SCMP_ACT_ALLOW, []) for name in ALLOW]
    out += [("bpf", SCMP_ACT_ALLOW, [(0, SCMP_CMP_EQ, cmd, 0)]) for cmd in BPF_CMDS.values()]
    # threads only: a clone without CLONE_THREAD (fork) is not in the list
    out.append(("clone", SCMP_ACT_ALLOW, [(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)]))
    # clone3's flags sit in memory the filter cannot read: glibc falls back to clone
    out.append(("clone3", SCMP_ACT_ERRNO(errno.ENOSYS), []))
    for name in ("kill", "tgkill"):
        out.append((name, SCMP_ACT_ALLOW, [(0, SCMP_CMP_EQ, pid, 0)]))
    return out


def install(pid: int | None = None) -> int:
    """Load the filter on every thread of this process (SeccompError if it
    cannot be: never run without it). Returns the number of rules."""
    lib = _libseccomp()
    pid = os.getpid() if pid is None else pid
    ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS)
    if not ctx:
        raise SeccompError(errno.ENOMEM, "seccomp_init failed")
    try:
        for attr, value in ((SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
                            (SCMP_FLTATR_CTL_NNP, 1), (SCMP_FLTATR_CTL_TSYNC, 1)):
            ret = lib.seccomp_attr_set(ctx, attr, value)
            if ret < 0:
                raise SeccompError(-ret, f"seccomp attribute {attr}: {os.strerror(-ret)}")
        n = 0
        for name, action, cmps in rules(pid):
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue  # not a system call of this architecture (e.g. aarch64 has no open)
            arr = (_ArgCmp * max(len(cmps), 1))(*[_ArgCmp(*c) for c in cmps])
            ret = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if ret < 0:
                raise SeccompError(-ret, f"seccomp rule for {name}: {os.strerror(-ret)}")
            n += 1
        ret = lib.seccomp_load(ctx)
        if ret < 0:
            raise SeccompError(-ret, f"seccomp_load: {os.strerror(-ret)}")
        return n
    finally:
        lib.seccomp_release(ctx)


def mode(pid: int | str = "self") -> int:
    """The Seccomp field of /proc/<pid>/status (2: a filter)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return 0
