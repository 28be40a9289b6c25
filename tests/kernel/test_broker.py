"""The real broker (tracer/broker.py), forked from a loaded tracer: a request
naming a file it did not discover, or a process the kernel did not report
exec'ing, is refused and counted; one it discovered is answered; at detach it
gives its counters and then exits."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.kernel.conftest import require
from tracer import broker, privileges, tls
from tracer.agent import Filters, Tracer


@pytest.fixture(autouse=True)
def _needs_kernel():
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")


def test_real_broker_refuses_a_path_it_did_not_discover(tmp_path):
    lib = next((p for p in tls.SYSTEM_LIBS if os.path.exists(p)), None)
    if lib is None:
        pytest.skip("no system libssl: TLS discovery is off")
    evil = tmp_path / "libevil.so"
    evil.write_bytes(open(lib, "rb").read())  # the API names are there: only the check refuses
    st = evil.stat()
    tracer = Tracer(Filters(ports=[1]))
    tracer.start()
    client = None
    try:
        keep = privileges.broker_caps(tls_discovery=True)
        client = broker.split(tracer, keep)
        tracer.separate(client)
        hello, _ = client.request("hello")
        assert hello["ok"] and hello["pid"] == client.pid
        reply, fds = client.request("attach_tls", path=str(evil), dev=st.st_dev, ino=st.st_ino)
        assert (reply, fds) == ({"ok": False,
                                 "refused": "attach_tls: not a file the broker discovered"}, [])
        # a process that did not exec since the start (this one): not the broker's to read
        reply, _ = client.request("maps", pid=os.getpid())
        assert reply == {"ok": False,
                         "refused": "maps: not a process the kernel reported an exec of"}
        child = subprocess.Popen([sys.executable, "-c",
                                  "import ssl, sys; print(flush=True); sys.stdin.read()"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            child.stdout.readline()  # libssl is mapped now
            reply, _ = client.request("maps", pid=child.pid)  # the kernel reported its exec
        finally:
            child.kill()
            child.wait()
        assert reply["ok"], reply
        path, dev, ino = next(m for m in reply["mappings"] if "libssl.so" in m[0])
        reply, fds = client.request("attach_tls", path=path, dev=dev, ino=ino)
        assert reply == {"ok": True, "attached": True, "error": ""} and fds == []  # at start
        tracer.stop()  # asks the broker to detach first
        assert client.final["refused"] == 2
        assert client.final["refusals"] == {
            "attach_tls: not a file the broker discovered": 1,
            "maps: not a process the kernel reported an exec of": 1}
        assert client.final["requests"] == 6 and client.final["exec_laps_lost"] == 0
    finally:
        if client is not None:
            client.close()
        tracer.stop()
    assert not os.path.exists(f"/proc/{client.pid}")  # it exited and was reaped
