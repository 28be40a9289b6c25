"""The broker's protocol without root (tracer/broker.py): every request is
checked, a refused one is answered and counted, nothing but what the broker
discovered itself can be named."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
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


PAGE, SIZE = 64, 128  # a small synthetic ring: records of 16 bytes (header + exec_event)


class Ring:
    """An exec ring in memory, as the kernel lays it out: the agent's
    consumer page, the producer page and the data area."""

    def __init__(self):
        self.cons = bytearray(8)
        self.prod = bytearray(PAGE + SIZE)

    def put(self, pid: int) -> None:
        pos = int.from_bytes(self.prod[:8], "little")
        at = PAGE + (pos & (SIZE - 1))
        self.prod[at:at + 16] = (8).to_bytes(4, "little") + bytes(4) + \
            pid.to_bytes(4, "little") + bytes(4)
        self.prod[:8] = (pos + 16).to_bytes(8, "little")

    def agent_consumes(self) -> None:
        self.cons[:8] = self.prod[:8]

    def watch(self, clock=lambda: 0.0) -> B.ExecWatch:
        return B.ExecWatch([B._ExecRing(self.cons, self.prod, SIZE, PAGE)], clock)


def _reported(*pids) -> B.ExecWatch:
    ring = Ring()
    w = ring.watch()
    for pid in pids:
        ring.put(pid)
    ring.agent_consumes()
    return w


class Echo(Addon):
    name = "echo"

    def broker_ops(self):
        return {"echo_pid": ({"pid": int}, lambda pid: {"pid": pid})}


def _broker(execs=None, **kw):
    tracer = SimpleNamespace(addons=[Echo()], tls=FakeProbes(),
                             kernel=SimpleNamespace(obj=None), **kw)
    return B.Broker(tracer, None, 0, None, execs=execs or _reported(1, 7, 9))


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
    ({"op": "maps", "pid": 8}, "maps: not a process the kernel reported an exec of"),
    ({"op": "echo_pid", "pid": 8}, "echo_pid: not a process the kernel reported an exec of"),
    ({"op": "config"}, "config: no --config file was given"),
    ({"op": "exe", "pid": 0}, "exe: not a process the tracer traces"),
    ({"op": "stack_maps", "pid": -1}, "stack_maps: pid is not a int"),
    ({"op": "stack_module", "pid": 7, "path": "/etc/shadow"},
     "stack_module: not a file the broker read in that process's maps"),
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
    assert b.handle({"op": "echo_pid", "pid": 9})[0]["refused"] == \
        "echo_pid: the agent is stopping"


def test_exe_still_answered_after_detach():
    """The spans of the last drain are named after the agent asked the
    broker to detach: exe stays answered (for traced processes only)."""
    b = _broker()
    b.handle({"op": "detach"})
    with subprocess.Popen(["sleep", "30"]) as p:
        try:
            reply, _ = b.handle({"op": "exe", "pid": p.pid})
        finally:
            p.kill()
    assert reply == {"ok": True, "exe": shutil.which("sleep") and os.path.realpath(
        shutil.which("sleep"))}
    assert b.handle({"op": "exe", "pid": os.getpid()})[0] == \
        {"ok": False, "refused": "exe: not a process the tracer traces"}  # the broker itself


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


def test_exec_watch_reads_behind_the_agent_at_its_own_position():
    """The pids come from the ring the agent consumed, never from the agent;
    the agent's consumer position is not moved."""
    ring = Ring()
    w = ring.watch()
    ring.put(41)
    ring.put(42)
    ring.agent_consumes()
    before = bytes(ring.cons)
    assert w.reported(42) and w.reported(41) and not w.reported(43)
    assert bytes(ring.cons) == before and w.lost == 0
    ring.put(43)  # not yet consumed by the agent: read as well
    assert w.reported(43)


def test_exec_watch_lap_lost_is_counted_and_its_pids_refused():
    ring = Ring()
    w = ring.watch()
    for pid in range(100, 100 + SIZE // 16 + 2):  # more than a lap before the broker reads
        ring.put(pid)
        ring.agent_consumes()
    assert not w.reported(100) and w.lost == 1
    ring.put(500)
    assert w.reported(500)  # resumed where the agent is


def test_exec_watch_forgets_after_the_keep_time():
    now = [0.0]
    ring = Ring()
    w = ring.watch(lambda: now[0])
    ring.put(7)
    assert w.reported(7)
    now[0] = B.EXEC_KEEP_S + 1
    assert not w.reported(7)


def test_config_is_the_file_named_at_start(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text("[scope]\nports = [80]\n")
    b = B.Broker(SimpleNamespace(addons=[], tls=None, kernel=SimpleNamespace(obj=None)), None,
                 0, None, config=str(cfg))
    reply, fds = b.handle({"op": "config"})
    assert reply == {"ok": True} and len(fds) == 1
    assert os.read(fds[0], 100) == b"[scope]\nports = [80]\n"
    assert b._opened == fds  # closed by serve() once sent
    os.close(fds[0])
    assert b.handle({"op": "config", "path": "/etc/shadow"})[0] == \
        {"ok": False, "refused": "config: fields must be []"}


def test_exe_and_stack_files_of_a_traced_process():
    """exe and stack_maps answer for a process the (absent) filters trace;
    stack_module opens only a file the broker read in that process's maps."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c",
                              "import sys; print(flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # exec'd, libraries mapped
        b = _broker()
        reply, _ = b.handle({"op": "exe", "pid": child.pid})
        assert reply == {"ok": True, "exe": os.path.realpath(sys.executable)}
        assert b.handle({"op": "exe", "pid": os.getpid()})[0] == \
            {"ok": False, "refused": "exe: not a process the tracer traces"}  # the broker
        lib = next(p for p in open(f"/proc/{child.pid}/maps").read().split()
                   if "libc.so" in p)
        assert b.handle({"op": "stack_module", "pid": child.pid, "path": lib})[0]["refused"]
        reply, fds = b.handle({"op": "stack_maps", "pid": child.pid})
        assert reply == {"ok": True}
        assert lib in os.read(fds[0], 1 << 20).decode()  # from the start: lseek'd back
        reply, mods = b.handle({"op": "stack_module", "pid": child.pid, "path": lib})
        assert reply == {"ok": True} and os.pread(mods[0], 4, 0) == b"\x7fELF"
        for fd in fds + mods:
            os.close(fd)
        assert b.refused == 2
    finally:
        child.kill()
        child.wait()
