"""The agent's seccomp filter (tracer/seccomp.py), loaded in a forked child
(no root needed: no_new_privs): what the agent does is allowed, a call off
the list kills the whole process with SIGSYS."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tracer import seccomp


def _in_child(body) -> int:
    """The wait status of a child that loads the filter and runs body()."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            seccomp.install()
            body()
            code = 0
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def _agent_like():
    t = threading.Thread(target=lambda: open("/proc/self/status").read())  # clone(CLONE_THREAD)
    t.start()
    t.join()
    assert seccomp.mode() == 2
    r, w = os.pipe()
    os.write(w, b"x")
    assert os.read(r, 1) == b"x"
    os.kill(os.getpid(), 0)  # itself: allowed


@pytest.mark.parametrize("body, sig", [
    (_agent_like, None),
    (lambda: os.execv("/bin/true", ["true"]), signal.SIGSYS),
    (lambda: os.fork(), signal.SIGSYS),  # clone without CLONE_THREAD
    (lambda: os.kill(1, 0), signal.SIGSYS),  # another process
    (lambda: os.setuid(0), signal.SIGSYS),
])
def test_allowed_or_killed_by_sigsys(body, sig):
    status = _in_child(body)
    if sig is None:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    else:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig


def test_bpf_only_map_commands():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def prog_load():
        attr = ctypes.create_string_buffer(128)
        libc.syscall(321, 5, attr, 128)  # bpf(BPF_PROG_LOAD): off the list

    def map_lookup():
        attr = ctypes.create_string_buffer(128)
        libc.syscall(321, 1, attr, 128)  # bpf(BPF_MAP_LOOKUP_ELEM) on fd 0: EBADF, not killed

    if os.uname().machine != "x86_64":
        pytest.skip("bpf's syscall number is x86_64's here")
    assert os.WTERMSIG(_in_child(prog_load)) == signal.SIGSYS
    status = _in_child(map_lookup)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
