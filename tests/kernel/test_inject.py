"""inject.bpf.o on real sockets: what sk_msg may and may not touch.

A client process (the only one the pid filter lets through) sends raw bytes
over loopback to a server in this process; the server reads to EOF and the
test compares what arrived with what was sent.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading

import pytest

from tests.kernel.conftest import require
from tracer import events, inject, loader
from tracer import sock as sockmod
from tracer.agent import load_sock

CLIENT = r"""
import socket, sys, time
port, parts = int(sys.argv[1]), [bytes.fromhex(p) for p in sys.argv[2:]]
sys.stdin.readline()  # wait for the filter
s = socket.create_connection(("127.0.0.1", port))
for p in parts:
    s.sendall(p)
    time.sleep(0.05)  # one sendmsg each, not coalesced by the sender
s.close()
"""
TP = re.compile(rb"traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]\r\n")
LONG = b"x-big: " + b"y" * 1500 + b"\r\n"
CLIENT_HELLO = bytes.fromhex("160301007a0100007603") + os.urandom(64)
H2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


@pytest.fixture(scope="module")
def injector():
    require("btf", "ringbuf", "tracepoint_syscalls", "sockops", "sk_msg", "inject_object")
    sock = loader.BPFObject.open(loader.object_path("sock"))
    try:
        load_sock(sock)
        inj = inject.Injector.load(sock, self_tgid=os.getpid())
        inj.start()
        # only the pids the test adds: nothing else on the machine is touched
        sock.map("filter_cfg").update(0, bytes(events.FilterConfigC(1, 0, 0, 0)))
        yield sock, inj
        inj.close()
    finally:
        sock.close()


def _send(injector, *parts: bytes, on_spawn=None) -> bytes:
    sock, inj = injector
    srv = socket.create_server(("127.0.0.1", 0))
    got = bytearray()

    def serve():
        c, _ = srv.accept()
        with c:
            while chunk := c.recv(65536):
                got.extend(chunk)

    t = threading.Thread(target=serve)
    t.start()
    p = subprocess.Popen([sys.executable, "-c", CLIENT, str(srv.getsockname()[1]),
                          *[x.hex() for x in parts]], stdin=subprocess.PIPE)
    sock.map("filter_pids").update(p.pid, b"\x01")
    if on_spawn is not None:
        on_spawn(p.pid)
    p.stdin.write(b"go\n")
    p.stdin.close()
    assert p.wait(timeout=20) == 0
    t.join(timeout=20)
    srv.close()
    sock.map("filter_pids").delete(p.pid)
    inj.drain()
    return bytes(got)


def test_get_gets_one_header_after_the_request_line(injector):
    req = b"GET /a?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    got = _send(injector, req, req)  # keep-alive: both requests
    heads = TP.findall(got)
    assert len(heads) == 2 and heads[0][0] != heads[1][0]
    assert TP.sub(b"", got) == req + req
    assert got.startswith(b"GET /a?q=1 HTTP/1.1\r\ntraceparent: 00-")
    waiting = [i for q in injector[1].waiting.by_key.values() for i in q]
    assert {(i.trace_id.encode(), i.span_id.encode()) for i in waiting} >= set(heads)


def test_post_body_is_never_touched(injector):
    head = b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 23\r\n\r\n"
    body = b'{"GET / HTTP/1.1\\r\\n":1}'[:23]
    got = _send(injector, head + body)
    assert TP.sub(b"", got) == head + body and got.endswith(body)
    got = _send(injector, head, b"GET / HTTP/1.1\r\nbody")  # body in its own write
    assert len(TP.findall(got)) == 1 and got.endswith(b"GET / HTTP/1.1\r\nbody")


@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\nTraceParent: 00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01\r\n\r\n",
    CLIENT_HELLO,
    H2,
    b"GET /" + b"a" * 40 + b" HTTP/1.1\r\n" + LONG + b"\r\n",  # head past INJECT_SCAN
    b"GET /a HTTP/1.1\r\nHost: x\r\n",  # head not complete in this segment
    b"HELLO WORLD this is not http\r\n\r\n",
], ids=["traceparent-present", "tls-client-hello", "http2-preface", "head-too-big",
        "head-split", "not-http"])
def test_never_touched(injector, payload):
    assert _send(injector, payload) == payload


def test_port_filter_applies_to_injection(injector):
    sock, _ = injector
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    cfg = sock.map("filter_cfg")
    cfg.update(0, bytes(events.FilterConfigC(1, 0, 0, 1)))  # --port with no port of ours
    sock.map("filter_ports").update(1, b"\x01")
    try:
        assert _send(injector, req) == req
    finally:
        sock.map("filter_ports").delete(1)
        cfg.update(0, bytes(events.FilterConfigC(1, 0, 0, 0)))
    assert TP.search(_send(injector, req))


def _comm_filter(sock):
    """--comm on, naming the client: on_spawn for _send; the filter is cleared after."""
    cfg, comms = sock.map("filter_cfg"), sock.map("filter_comms")

    def on(pid):
        # the name the client execs as (its /proc comm may still be ours)
        comms.update(sockmod.comm_key(os.path.basename(sys.executable)), b"\x01")
        cfg.update(0, bytes(events.FilterConfigC(1, 0, 0, 0, 1)))

    def off():
        cfg.update(0, bytes(events.FilterConfigC(1, 0, 0, 0)))
        for k in list(comms.keys()):
            comms.delete(k)
    return on, off


def test_comm_filter_applies_to_injection(injector):
    """The same --comm with the helper: the named client gets its header."""
    sock, inj = injector
    if inj.lost:
        pytest.skip(inj.degraded())
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    on, off = _comm_filter(sock)
    try:
        assert len(TP.findall(_send(injector, req, on_spawn=on))) == 1
    finally:
        off()
    assert inj.counters()["unfiltered"] == 0
