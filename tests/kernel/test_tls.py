"""tls.bpf.o on sock.bpf.o's maps, at the event level (root): uprobes on the
system libssl, the SSL* -> fd join, reads served from buffered records, and
the ciphertext of a TLS connection skipped and counted. Each test runs with
both kinds of links: uprobe_multi (the default where the kernel has it) and
per-function links (forced with TRACER_UPROBE_MULTI=0)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.kernel.conftest import require
from tracer import events, loader, tls
from tracer.agent import load_sock

# A TLS server and client in one process, over loopback: the client sends a
# request in one record; the server reads it 7 bytes at a time, so all but the
# first SSL_read are served from the decrypted record, with no syscall.
SCRIPT = textwrap.dedent("""
    import socket, ssl, subprocess, sys, tempfile, threading, os
    d = tempfile.mkdtemp()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", d + "/k", "-out", d + "/c", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(d + "/c", d + "/k")
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    REQ = b"GET /kernel-tls HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n"
    got = []
    def serve():
        conn, _ = lsock.accept()
        with sctx.wrap_socket(conn, server_side=True) as s:
            buf = b""
            while len(buf) < len(REQ):
                buf += s.recv(7)
            got.append(buf)
            s.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
    t = threading.Thread(target=serve)
    t.start()
    cctx = ssl.create_default_context()
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    with cctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as c:
        c.sendall(REQ)
        resp = c.recv(100)
    t.join()
    assert got == [REQ] and resp.endswith(b"ok"), (got, resp)
    print(port)
""")


@contextlib.contextmanager
def sock_for_children():
    """sock.bpf.o loaded and attached, tracing only this process and its
    children: other traffic on the machine must not fill the ring before the
    test reads it."""
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")
    sock = loader.BPFObject.open(loader.object_path("sock"))
    try:
        sock.set_rodata(self_tgid=os.getpid())
        load_sock(sock)
        sock.map("filter_cfg").update(0, bytes(events.FilterConfigC(1, 0, 0, 0)))
        sock.map("filter_pids").update(os.getpid(), b"\x01")
        for prog in sock.programs:
            try:
                sock.attach(prog)
            except loader.AttachError:
                pass  # a syscall this kernel lacks: the test uses the common ones
        yield sock
    finally:
        sock.close()


def system_libssl() -> tuple[str, int, int]:
    """(path, dev, inode) of the system libssl."""
    libs = [p for p in tls.SYSTEM_LIBS if os.path.exists(p)]
    if not libs:
        pytest.skip("no system libssl")
    st = os.stat(libs[0])
    return libs[0], st.st_dev, st.st_ino


@pytest.fixture(params=[tls.MODE_MULTI, tls.MODE_PER_FUNCTION])
def traced(request, monkeypatch):
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")
    if request.param == tls.MODE_MULTI:
        require("uprobe_multi")
    else:
        monkeypatch.setenv(loader.UPROBE_MULTI_ENV, "0")
    with sock_for_children() as sock:
        probes = tls.TlsProbes.load(sock, self_tgid=os.getpid())
        try:
            assert probes.mode == request.param
            path, dev, ino = system_libssl()
            assert probes.consider(path, dev, ino, strict=True)
            yield sock, probes
        finally:
            probes.close()


def test_tls_plaintext_joins_the_socket_and_ciphertext_is_skipped(traced):
    sock, probes = traced
    # 5 functions: an entry and a return probe each, or one link for all
    # entries and one for all returns
    assert len([link for link in probes.obj.attached if "@" in link]) == \
        (2 if probes.multi else 10)
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    port = int(p.stdout)
    evs = []
    sock.ring_buffer("events").consume(lambda buf, off, size: evs.append(
        events.decode(buf, off, size)))
    opens = {e.conn_id: e for e in evs if isinstance(e, events.OpenEvent)
             and port in (e.lport, e.rport)}
    assert len(opens) == 2  # the server's accepted socket, the client's
    data = [e for e in evs if isinstance(e, events.DataEvent) and e.conn_id in opens]
    plain = [e for e in data if e.syscall >= events.SYS_FIRST_TLS]
    # ciphertext (handshake included) never left the kernel
    assert [e for e in data if e.syscall < events.SYS_FIRST_TLS] == []
    by = {(opens[e.conn_id].role, e.syscall): [] for e in plain}
    for e in plain:
        by[(opens[e.conn_id].role, e.syscall)].append(e.payload)
    S, C = events.ConnRole.ROLE_SERVER, events.ConnRole.ROLE_CLIENT
    RD, WR = events.SysKind.SYS_SSL_READ, events.SysKind.SYS_SSL_WRITE
    req = b"GET /kernel-tls HTTP/1.1\r\nhost: x\r\n\r\n"
    assert by[(C, WR)] == [req]
    # 7-byte reads: the first one made the read syscall, the rest came from
    # the decrypted record and were joined through the remembered SSL* -> fd
    assert b"".join(by[(S, RD)]) == req and len(by[(S, RD)]) == -(-len(req) // 7)
    assert by[(S, WR)] == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    assert b"".join(by[(C, RD)]).endswith(b"ok")
    for e in plain:
        assert e.pid == opens[e.conn_id].pid and e.size == len(e.payload)
        assert e.direction == (events.DataDir.DIR_INGRESS if e.syscall == RD
                               else events.DataDir.DIR_EGRESS)
    m = sock.map("counters")
    C_ = events.Counter
    assert m.percpu_sum(C_.CTR_TLS_SKIPPED) > 0
    assert m.percpu_sum(C_.CTR_TLS_NO_FD) == 0
    assert m.percpu_sum(C_.CTR_TLS_EVENTS) >= len(plain)


def test_tls_object_shares_the_maps_of_sock(traced):
    sock, probes = traced
    for name in tls.SHARED_MAPS:
        a, b = sock.map(name), probes.obj.map(name)
        assert (a.key_size, a.value_size, a.max_entries) == \
            (b.key_size, b.value_size, b.max_entries), name
        assert _map_id(a.fd) == _map_id(b.fd), name  # one kernel map, two fds


def _map_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("map_id:"):
                return int(line.split()[1])
    raise AssertionError("no map_id in fdinfo")


def test_discovery_counts_processes_it_may_not_inspect():
    """Without the privilege to read a root process's maps (as nobody), TLS
    discovery counts that process as unreadable instead of taking it for one
    without libraries."""
    code = ("import os; from tracer import tls\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "p = tls.TlsProbes(obj=None)\n"
            "p.scan_pid(1)\n"
            "print(p.unreadable, p.libraries)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "{}"]


def test_discovery_looks_only_at_processes_the_filters_let_through(traced):
    """With a pid filter (the fixture's: this process, followed on fork) the
    start-up scan and the exec watch see only traced processes: an
    untraced one is never scanned."""
    sock, probes = traced
    probes.obj.attach("tp_exec")
    probes.execs.consume(lambda buf, off, size: None)  # what came before
    traced_child = subprocess.Popen(["sleep", "5"])  # forked by a traced pid: followed
    sock.map("filter_pids").delete(os.getpid())
    other = subprocess.Popen(["sleep", "5"])  # forked while untraced: not followed
    try:
        time.sleep(0.2)
        assert probes.candidates() == [traced_child.pid]
        seen = []
        probes.execs.consume(lambda buf, off, size: seen.append(
            int.from_bytes(buf[off:off + 4], "little")))
        assert seen == [traced_child.pid]
    finally:
        for p in (traced_child, other):
            p.kill()
            p.wait()
