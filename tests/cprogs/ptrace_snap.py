"""Stop a process with ptrace, copy its registers and the top of its stack,
and let it go: a real user stack to unwind, without BPF or root (a parent
may trace its own child, also under YAMA ptrace_scope=1). x86-64 only.
"""

from __future__ import annotations

import ctypes
import os
import platform

PTRACE_GETREGS, PTRACE_ATTACH, PTRACE_DETACH = 12, 16, 17
# struct user_regs_struct (sys/user.h), x86-64
FIELDS = ("r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags "
          "rsp ss fs_base gs_base ds es fs gs").split()


class _Regs(ctypes.Structure):
    _fields_ = [(f, ctypes.c_ulonglong) for f in FIELDS]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def supported() -> str | None:
    """None, or why this cannot work here."""
    if platform.machine() != "x86_64":
        return f"ptrace register layout is x86-64 only (this is {platform.machine()})"
    return None


def snapshot(pid: int, stack_bytes: int = 16384) -> tuple[dict[str, int], bytes]:
    """(registers, stack copy from rsp upward) of pid, stopped for the copy.
    Raises OSError (errno EPERM when ptrace is not allowed)."""
    if _libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace(PTRACE_ATTACH, {pid}): {os.strerror(err)}")
    try:
        os.waitpid(pid, 0)  # __WALL is not needed: the main thread of a child
        regs = _Regs()
        if _libc.ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(regs)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"ptrace(PTRACE_GETREGS, {pid}): {os.strerror(err)}")
        out = {f: getattr(regs, f) for f in FIELDS}
        # the stack mapping may end before stack_bytes: read what is there
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            stack = b""
            size = stack_bytes
            while size >= 512 and not stack:
                try:
                    stack = os.pread(mem.fileno(), size, out["rsp"])
                except OSError:
                    size //= 2
        return out, stack
    finally:
        _libc.ptrace(PTRACE_DETACH, pid, None, None)
