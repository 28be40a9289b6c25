"""The real broker (tracer/broker.py), forked from a loaded tracer: a request
naming a file it did not discover is refused and counted; one it discovered
is answered; at detach it gives its counters and then exits."""

from __future__ import annotations

import os
import ssl  # noqa: F401 (maps libssl into this process: something to discover)

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
        reply, _ = client.request("maps", pid=os.getpid())  # discovered now: our own libraries
        assert reply["ok"]
        path, dev, ino = next(m for m in reply["mappings"] if "libssl.so" in m[0])
        reply, fds = client.request("attach_tls", path=path, dev=dev, ino=ino)
        assert reply == {"ok": True, "attached": True, "error": ""} and fds == []  # at start
        tracer.stop()  # asks the broker to detach first
        assert client.final["refused"] == 1
        assert client.final["refusals"] == {"attach_tls: not a file the broker discovered": 1}
        assert client.final["requests"] == 5
    finally:
        if client is not None:
            client.close()
        tracer.stop()
    assert not os.path.exists(f"/proc/{client.pid}")  # it exited and was reaped
