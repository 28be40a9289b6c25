"""The broker's protocol without root (tracer/broker.py): every request is
checked, a refused one is answered and counted, nothing but what the broker
discovered itself can be named."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest

from tracer import broker as B
from tracer.addons import Addon


class FakeProbes:
    def __init__(self):
        self.discovered = {(1, 2): "/usr/lib/libssl.so.3"}
        self.libraries = {}
        self.failed = {}
        self.obj = SimpleNamespace(attached=[])
        self.considered = []

    def consider(self, path, dev, ino):
        self.considered.append(path)
        self.libraries[(dev, ino)] = path
        return True

    def discover(self, pid):
        if pid == 1:
            raise PermissionError
        return [("/usr/lib/libssl.so.3", 1, 2)]


class Echo(Addon):
    name = "echo"

    def broker_ops(self):
        return {"echo_pid": ({"pid": int}, lambda pid: {"pid": pid})}


def _broker(**kw):
    tracer = SimpleNamespace(addons=[Echo()], tls=FakeProbes(),
                             kernel=SimpleNamespace(obj=None), **kw)
    return B.Broker(tracer, None, 0, None)


@pytest.mark.parametrize("msg, why", [
    ({"op": "open", "path": "/etc/shadow"}, "unknown request"),
    ({"pid": 3}, "unknown request"),
    ({"op": "maps"}, "maps: fields must be ['pid']"),
    ({"op": "maps", "pid": 3, "x": 1}, "maps: fields must be ['pid']"),
    ({"op": "maps", "pid": "3"}, "maps: pid is not a int"),
    ({"op": "maps", "pid": True}, "maps: pid is not a int"),
    ({"op": "maps", "pid": -5}, "maps: pid is not a int"),
    ({"op": "attach_tls", "path": "/tmp/evil.so", "dev": 1, "ino": 3},
     "attach_tls: not a file the broker discovered"),
    ({"op": "attach_tls", "path": "/tmp/evil.so", "dev": 1, "ino": 2},
     "attach_tls: not a file the broker discovered"),
    ({"op": "maps", "pid": 0}, "maps: not a process id"),
])
def test_refused_and_counted(msg, why):
    b = _broker()
    assert b.handle(msg) == ({"ok": False, "refused": why}, [])
    assert (b.requests, b.refused, b.refusals) == (1, 1, {why: 1})
    assert b.tracer.tls.considered == []


def test_discovered_file_is_attached_and_maps_answered():
    b = _broker()
    assert b.handle({"op": "maps", "pid": 7}) == \
        ({"ok": True, "mappings": [["/usr/lib/libssl.so.3", 1, 2]]}, [])
    assert b.handle({"op": "maps", "pid": 1}) == ({"ok": False, "error": "unreadable"}, [])
    reply, fds = b.handle({"op": "attach_tls", "path": "/usr/lib/libssl.so.3", "dev": 1,
                           "ino": 2})
    assert (reply, fds) == ({"ok": True, "attached": True, "error": ""}, [])
    assert b.tracer.tls.considered == ["/usr/lib/libssl.so.3"]
    assert (b.requests, b.refused, b.attached) == (3, 0, 1)


def test_addon_request_and_nothing_after_detach():
    b = _broker()
    assert b.handle({"op": "echo_pid", "pid": 9}) == ({"ok": True, "pid": 9}, [])
    assert b.handle({"op": "echo_pid", "pid": "9"})[0]["refused"] == "echo_pid: pid is not a int"
    reply, _ = b.handle({"op": "detach"})
    assert reply["ok"] and reply["requests"] == 3 and reply["refused"] == 1
    assert b.handle({"op": "maps", "pid": 7})[0] == \
        {"ok": False, "refused": "maps: the agent is stopping"}


def test_wire_format_whole_json_objects_only():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        B.send(a, {"op": "hello"})
        assert B.recv(b) == ({"op": "hello"}, [])
        for raw in (b"not json", b"[1, 2]", b"x" * (B.MAX_MESSAGE + 1)):
            a.send(raw)
            with pytest.raises(B.ProtocolError):
                B.recv(b)
        r, w = os.pipe()
        socket.send_fds(a, [b"{}"], [r])
        msg, fds = B.recv(b)
        assert msg == {} and len(fds) == 1
        for fd in (r, w, *fds):
            os.close(fd)
        a.close()
        assert B.recv(b) == (None, [])


def test_end_of_the_agent_in_one_line():
    assert B.describe_end(42, 31) == (
        "tracer: the agent (pid 42) was killed by SIGSYS: a system call outside its seccomp "
        "allow-list (the kernel log names it, audit type=1326); the broker detached everything")
    assert B.describe_end(42, 9).endswith("was killed by SIGKILL; the broker detached everything")
    assert "exited with status 2 before stopping" in B.describe_end(42, 2 << 8)
    assert "is gone" in B.describe_end(42, None)
