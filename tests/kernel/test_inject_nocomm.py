"""inject.bpf.o on a kernel whose sk_msg lacks bpf_get_current_comm (Debian
6.1): loaded without it, and fail-closed while --comm is on. Its own module:
the injector of tests/kernel/test_inject.py must not be attached meanwhile."""

from __future__ import annotations

import os

from tests.kernel.conftest import require
from tests.kernel.test_inject import TP, _comm_filter, _send
from tests.unit.test_probe_objects import LOG_61
from tracer import events, inject, loader
from tracer.agent import load_sock


def test_kernel_without_comm_in_sk_msg_injects_but_fails_closed_on_comm(monkeypatch):
    """Debian 6.1's verifier has no bpf_get_current_comm for sk_msg (LOG_61):
    the injector loads without it and, while --comm is on, sends requests
    unchanged (counted), never into a process it cannot check."""
    require("btf", "ringbuf", "tracepoint_syscalls", "sockops", "sk_msg", "inject_object")
    real = loader.BPFObject.load_on
    seen = []

    def like_61(name, sock, maps, configure=None, **rodata):
        seen.append(rodata.get("msg_comm", 1))
        if rodata.get("msg_comm", 1):
            raise loader.LoadError("kernel refused inject.bpf.o (EINVAL: Invalid argument)",
                                   err=22, log_text=LOG_61)
        return real(name, sock, maps, configure, **rodata)

    monkeypatch.setattr(loader.BPFObject, "load_on", like_61)
    sock = loader.BPFObject.open(loader.object_path("sock"))
    try:
        load_sock(sock)
        inj = inject.Injector.load(sock, self_tgid=os.getpid())
        assert seen == [1, 0] and inj.lost == ("bpf_get_current_comm",)
        inj.start()
        sock.map("filter_cfg").update(0, bytes(events.FilterConfigC(1, 0, 0, 0)))
        req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        on, off = _comm_filter(sock)
        try:
            assert _send((sock, inj), req, on_spawn=on) == req
        finally:
            off()
        assert inj.counters()["unfiltered"] == 1
        assert len(TP.findall(_send((sock, inj), req))) == 1  # the other filters still work
        inj.close()
    finally:
        sock.close()

