"""HTTP/2 connections get a larger capture in the kernel: from the client
preface (sniffed in sock.bpf.c) or raised by user space for a connection
recognised mid-stream (conn.kernel_capture_hook on the "conns" map)."""

import os
import socket

from tests.kernel.test_loader import _drain
from tracer import events
from tracer.agent import load_sock
from tracer.conn import kernel_capture_hook
from tracer.protocols.http2 import PREFACE

SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
BIG = bytes(range(256)) * 24  # 6144 bytes per write


def _client(port: int, first: bytes, go_r: int | None = None) -> int:
    """A child that connects, writes `first`, (waits for a byte on go_r), then
    writes BIG three times."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(first)
            if go_r is not None:
                os.read(go_r, 1)
            for _ in range(3):
                c.sendall(BIG)
            c.close()
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def _serve(listener) -> None:
    conn, _ = listener.accept()
    while conn.recv(65536):
        pass
    conn.close()


def _writes(evs, pid):
    return [e for e in evs if isinstance(e, events.DataEvent) and e.pid == pid]


def _run(sock_obj, listener, first: bytes, total: int):
    load_sock(sock_obj)
    sock_obj.attach_all()
    rb = sock_obj.ring_buffer("events")
    pid = _client(listener.getsockname()[1], first)
    _serve(listener)
    os.waitpid(pid, 0)
    got = _writes(_drain(rb, lambda evs: sum(e.size for e in _writes(evs, pid)) >= total), pid)
    assert sum(e.size for e in got) == total
    return got


def test_preface_raises_the_capture(sock_obj, listener):
    first = PREFACE + SETTINGS_FRAME
    got = _run(sock_obj, listener, first, len(first) + 3 * len(BIG))
    assert got[0].payload == first
    assert [len(e.payload) for e in got[1:]] == [min(e.size, 4096) for e in got[1:]]
    assert any(len(e.payload) == 4096 for e in got[1:])


def test_http1_keeps_the_normal_capture(sock_obj, listener):
    first = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 18432\r\n\r\n" + b"y" * 1000
    got = _run(sock_obj, listener, first, len(first) + 3 * len(BIG))
    assert got[0].payload == first[:512]  # sniffed at 4096, cut back to 512
    assert all(len(e.payload) == min(e.size, 512) for e in got)


def test_user_space_raises_a_midstream_connection(sock_obj, listener):
    load_sock(sock_obj)
    sock_obj.attach_all()
    rb = sock_obj.ring_buffer("events")
    go_r, go_w = os.pipe()
    first = SETTINGS_FRAME + b"\x00" * 600  # no preface: looks like a joined-late stream
    pid = _client(listener.getsockname()[1], first, go_r)
    conn, _ = listener.accept()
    got = _writes(_drain(rb, lambda evs: _writes(evs, pid)), pid)
    assert len(got[0].payload) == 512
    kernel_capture_hook(sock_obj.map("conns"))(got[0])
    os.write(go_w, b"x")
    while conn.recv(65536):
        pass
    conn.close()
    os.waitpid(pid, 0)
    total = 3 * len(BIG)
    later = _writes(_drain(rb, lambda evs: sum(e.size for e in _writes(evs, pid)) >= total), pid)
    assert sum(e.size for e in later) == total
    assert all(len(e.payload) == min(e.size, 4096) for e in later)
    os.close(go_r)
    os.close(go_w)
