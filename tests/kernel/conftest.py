"""Kernel tier: root and real BPF. A missing privilege or kernel feature turns
into a skip that names it, never a failure (CI runs as root on a kernel that
has everything, so nothing skips there)."""

import functools
import os
import socket

import pytest


@functools.cache
def _probe():
    from tracer import probe

    return probe.probe()


def require(*features: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_BPF, CAP_PERFMON)")
    res = _probe()
    for f in features:
        if not res.ok(f):
            pytest.skip(f"kernel feature missing: {f} ({res.features[f].detail})")


@pytest.fixture
def sock_features():
    require("btf", "ringbuf", "tracepoint_syscalls")


@pytest.fixture
def sock_obj(sock_features):
    """sock.bpf.o opened, this process excluded; the test loads and attaches."""
    from tracer import loader

    obj = loader.BPFObject.open(loader.object_path("sock"))
    obj.set_rodata(self_tgid=os.getpid(), capture_bytes=512)
    try:
        yield obj
    finally:
        obj.close()


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    yield srv
    srv.close()
