"""--span-stacks in the kernel: sock.bpf.c takes a user stack at the first
request-direction syscall of each turn of an HTTP/1 conversation, and none
on a connection handled as HTTP/2 (user space attaches stacks to HTTP/1
spans only): not at its preface, not after user space raised the capture of
a connection it recognised mid-stream (conn.kernel_capture_hook).

The traced side (client or server) is a forked child; this process, the
other side, is excluded (self_tgid). Each round is one request, then one
reply read back, so each round is one turn."""

import os
import socket

import pytest

from tests.kernel.test_loader import _drain
from tracer import events
from tracer.agent import load_sock
from tracer.conn import kernel_capture_hook
from tracer.protocols.http2 import PREFACE

ROUNDS = 7
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
# a HEADERS frame (stream 1, END_HEADERS) of 3 bytes of header block
H2_REQ = b"\x00\x00\x03\x01\x04\x00\x00\x00\x01\x82\x86\x84"
H1_REQ = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
H1_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def _fork(fn) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def _converse(sock, msgs, reply: bytes, client: bool, before_reply=None) -> None:
    """client: send each message, read a reply. Server: read a message, reply."""
    for i, msg in enumerate(msgs):
        if client:
            sock.sendall(msg)
            if not sock.recv(65536):
                raise EOFError
        else:
            if not sock.recv(65536):
                raise EOFError
            if before_reply is not None and i == 0:
                before_reply()
            sock.sendall(reply)


def _run(sock_obj, listener, msgs, reply, traced: str, after_first=None):
    """One connection, the `traced` side in a child. Returns the child's data
    events (requests and replies), once the child has exited."""
    sock_obj.set_rodata(span_stacks=1)
    load_sock(sock_obj)
    sock_obj.attach_all()
    rb = sock_obj.ring_buffer("events")
    port = listener.getsockname()[1]
    got = []

    def mine(evs):
        return [e for e in evs if isinstance(e, events.DataEvent) and e.pid == pid]

    def first_seen():  # the traced side's first request is in the ring: hook it
        got.extend(_drain(rb, lambda evs: mine(evs)))
        after_first(mine(got)[0])

    hook = first_seen if after_first else None
    if traced == "client":
        def child():
            with socket.create_connection(("127.0.0.1", port)) as c:
                _converse(c, msgs, reply, True)

        pid = _fork(child)
        conn, _ = listener.accept()
        with conn:
            _converse(conn, msgs, reply, False, hook)
    else:
        def child():
            conn, _ = listener.accept()
            with conn:
                _converse(conn, msgs, reply, False)

        pid = _fork(child)
        with socket.create_connection(("127.0.0.1", port)) as c:
            for i, msg in enumerate(msgs):
                c.sendall(msg)
                if i == 0 and hook:
                    hook()
                assert c.recv(65536)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    total = sum(map(len, msgs)) + len(msgs) * len(reply)
    got.extend(_drain(rb, lambda evs: sum(e.size for e in mine(got + evs)) >= total))
    evs = mine(got)
    assert sum(e.size for e in evs) == total
    return evs


def _requests(evs, traced: str):
    want = events.DataDir.DIR_EGRESS if traced == "client" else events.DataDir.DIR_INGRESS
    return [e for e in evs if e.direction == want]


@pytest.mark.parametrize("traced", ["client", "server"])
def test_http1_requests_take_one_stack_each(sock_obj, listener, traced):
    evs = _run(sock_obj, listener, [H1_REQ] * ROUNDS, H1_REPLY, traced)
    reqs = _requests(evs, traced)
    assert len(reqs) == ROUNDS
    assert all(e.stack > 0 for e in reqs)
    assert all(e.stack == 0 for e in evs if e not in reqs)  # replies take none


@pytest.mark.parametrize("traced", ["client", "server"])
def test_http2_from_its_preface_takes_no_stack(sock_obj, listener, traced):
    msgs = [PREFACE + SETTINGS] + [H2_REQ] * (ROUNDS - 1)
    evs = _run(sock_obj, listener, msgs, SETTINGS, traced)
    assert len(_requests(evs, traced)) == ROUNDS
    assert [e.stack for e in evs] == [0] * len(evs)


def test_http2_recognised_midstream_takes_no_stack_after_the_hook(sock_obj, listener):
    """Joined late (no preface): the kernel cannot tell h2 from the first bytes
    (that request takes a stack); once user space raised the capture, none."""
    msgs = [SETTINGS + H2_REQ] + [H2_REQ] * (ROUNDS - 1)
    hooked = []

    def hook(first):
        kernel_capture_hook(sock_obj.map("conns"))(first)
        hooked.append(first)

    evs = _run(sock_obj, listener, msgs, SETTINGS, "client", after_first=hook)
    reqs = _requests(evs, "client")
    assert len(hooked) == 1 and len(reqs) == ROUNDS
    assert reqs[0].stack > 0
    assert [e.stack for e in reqs[1:]] == [0] * (ROUNDS - 1)
