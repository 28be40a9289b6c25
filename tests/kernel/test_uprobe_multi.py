"""TLS uprobes as uprobe_multi links (root, Linux 6.6+): one link for a
library's entries and one for its returns, the cookie of each offset naming
the function (tls.h enum tls_hook). A real exchange, curl (SSL_read,
SSL_write) against a Python server (SSL_read_ex, SSL_write_ex), gives each
function's bytes under its own identity; swapped cookies swap the identities,
so the cookie is what names the function. The fallbacks: the knob
(TRACER_UPROBE_MULTI=0) and a multi link the kernel refuses."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from tests.kernel.conftest import require
from tests.kernel.test_tls import sock_for_children, system_libssl
from tracer import events, loader, tls

pytestmark = pytest.mark.timeout(120)

H = tls.TlsHook
RIGHT = dict(tls.HOOK_COOKIES)
SWAPPED = {**RIGHT, "SSL_read": H.TLS_HOOK_SSL_WRITE, "SSL_write": H.TLS_HOOK_SSL_READ,
           "SSL_read_ex": H.TLS_HOOK_SSL_WRITE_EX, "SSL_write_ex": H.TLS_HOOK_SSL_READ_EX}
RESP = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nmulti-ok"

# A Python TLS server (SSL_read_ex/SSL_write_ex) and curl (SSL_read/SSL_write)
# over loopback, one request answered with argv[1] (hex); prints the port.
SCRIPT = textwrap.dedent("""
    import socket, ssl, subprocess, sys, tempfile, threading
    RESP = bytes.fromhex(sys.argv[1])
    d = tempfile.mkdtemp()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", d + "/k", "-out", d + "/c", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(d + "/c", d + "/k")
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    def serve():
        conn, _ = lsock.accept()
        with sctx.wrap_socket(conn, server_side=True) as s:
            buf = b""
            while b"\\r\\n\\r\\n" not in buf:
                buf += s.recv(4096)
            s.sendall(RESP)
    t = threading.Thread(target=serve)
    t.start()
    out = subprocess.run(["curl", "-sk", "--http1.1", f"https://127.0.0.1:{port}/multi"],
                         capture_output=True, timeout=30)
    t.join()
    assert out.stdout == b"multi-ok", out
    print(port)
""")


@pytest.fixture
def sock():
    require("uprobe_multi")
    with sock_for_children() as s:
        yield s


@pytest.fixture
def probes(sock):
    p = tls.TlsProbes.load(sock, self_tgid=os.getpid())
    try:
        assert (p.mode, p.multi_why) == (tls.MODE_MULTI, "")
        yield p
    finally:
        p.close()


def exchange(sock) -> tuple[dict, list[events.DataEvent]]:
    """Run SCRIPT; (conn_id -> open event, plaintext data events) of its port."""
    p = subprocess.run([sys.executable, "-c", SCRIPT, RESP.hex()], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    port = int(p.stdout)
    evs = []
    sock.ring_buffer("events").consume(lambda buf, off, size: evs.append(
        events.decode(buf, off, size)))
    opens = {e.conn_id: e for e in evs if isinstance(e, events.OpenEvent)
             and port in (e.lport, e.rport)}
    assert len(opens) == 2  # curl's socket, the server's accepted one
    plain = [e for e in evs if isinstance(e, events.DataEvent) and e.conn_id in opens
             and e.syscall >= events.SYS_FIRST_TLS]
    return opens, plain


def by_label(opens, plain) -> dict[tuple[str, int, int], bytes]:
    """(comm, role, syscall) -> the bytes in order."""
    out: dict[tuple[str, int, int], bytes] = {}
    for e in plain:
        key = (e.comm, opens[e.conn_id].role, e.syscall)
        out[key] = out.get(key, b"") + e.payload
    return out


@pytest.mark.parametrize("cookies", ["right", "swapped"])
def test_the_cookie_names_the_function(sock, probes, cookies):
    """One entry and one return link on libssl carry all five functions.
    Right cookies: curl's request is an SSL_write, the server's read of it
    SSL_read_ex, and so on. Swapped read/write cookies: every byte comes
    under the other identity (the cookie alone says which function ran)."""
    path, _, _ = system_libssl()
    offsets = tls.symbol_offsets(path)
    assert set(offsets) == set(tls.HOOKS)
    names = sorted(offsets)
    cmap = RIGHT if cookies == "right" else SWAPPED
    for prog, ret in ((tls.MULTI_ENTRY, False), (tls.MULTI_RETURN, True)):
        probes.obj.attach_uprobe_multi(prog, path, [offsets[n] for n in names],
                                       [int(cmap[n]) for n in names], retprobe=ret)
    assert probes.obj.attached == [f"{tls.MULTI_ENTRY}@{path}:multi:-1",
                                   f"{tls.MULTI_RETURN}@{path}:multi:-1"]
    opens, plain = exchange(sock)
    got = by_label(opens, plain)
    C, S = events.ConnRole.ROLE_CLIENT, events.ConnRole.ROLE_SERVER
    RD, WR = events.SysKind.SYS_SSL_READ, events.SysKind.SYS_SSL_WRITE
    if cookies == "swapped":
        RD, WR = WR, RD
    req = got.get(("curl", C, WR), b"")
    assert req.startswith(b"GET /multi HTTP/1.1\r\n") and req.endswith(b"\r\n\r\n")
    assert got == {("curl", C, WR): req, ("python", S, RD): req,
                   ("python", S, WR): RESP, ("curl", C, RD): RESP}
    for e in plain:  # the direction follows the identity
        assert e.direction == (events.DataDir.DIR_INGRESS
                               if e.syscall == events.SysKind.SYS_SSL_READ
                               else events.DataDir.DIR_EGRESS)
    if cookies == "right":  # every entry met its return: nothing left in flight
        pids = {e.pid for e in plain}
        assert [k for k in sock.map("ssl_active").keys()
                if int.from_bytes(k, "little") >> 32 in pids] == []
    assert sock.map("counters").percpu_sum(events.Counter.CTR_TLS_NO_FD) == 0


def test_consider_attaches_a_library_with_two_links(sock, probes):
    path, dev, ino = system_libssl()
    assert probes.consider(path, dev, ino, strict=True)
    assert probes.obj.attached == [f"{tls.MULTI_ENTRY}@{path}:multi:-1",
                                   f"{tls.MULTI_RETURN}@{path}:multi:-1"]
    assert (probes.multi_refused, probes.fallback) == (0, None)
    # only the multi pair was loaded: the per-function programs wait for a refusal
    assert not any(probes.obj.autoload(p) for pair in tls.HOOKS.values() for p in pair)


def test_a_refused_multi_link_falls_back_to_per_function_links(sock, probes, monkeypatch):
    """The entry link is made, the return link refused: the entry link goes
    again, the library takes its per-function links, counted once."""
    real = probes.obj.attach_uprobe_multi

    def refuse_returns(prog, binary, offsets, cookies=None, retprobe=False, pid=-1):
        if retprobe:
            raise loader.AttachError("refused for the test", program=prog, err=errno.EINVAL)
        return real(prog, binary, offsets, cookies, retprobe, pid)

    monkeypatch.setattr(probes.obj, "attach_uprobe_multi", refuse_returns)
    path, dev, ino = system_libssl()
    assert probes.consider(path, dev, ino, strict=True)
    assert probes.multi_refused == 1
    # made by a second copy of tls.bpf.o, per-function programs only, and
    # adopted: released with the others (and passed on by the broker)
    assert probes.fallback is not None and probes.fallback.attached == []
    assert not probes.fallback.autoload(tls.MULTI_ENTRY)
    assert sorted(probes.obj.attached) == sorted(
        f"{prog}@{path}:{off}:-1" for name, off in tls.symbol_offsets(path).items()
        for prog in tls.HOOKS[name])
    opens, plain = exchange(sock)  # and the per-function links trace
    got = by_label(opens, plain)
    C = events.ConnRole.ROLE_CLIENT
    assert got[("curl", C, events.SysKind.SYS_SSL_READ)] == RESP


def test_the_knob_loads_the_per_function_programs_only(sock, monkeypatch):
    monkeypatch.setenv(loader.UPROBE_MULTI_ENV, "0")
    assert loader.uprobe_multi() == (False, f"off ({loader.UPROBE_MULTI_ENV}=0)")
    p = tls.TlsProbes.load(sock, self_tgid=os.getpid())
    try:
        assert (p.mode, p.multi_why) == (tls.MODE_PER_FUNCTION, "off (TRACER_UPROBE_MULTI=0)")
        assert not p.obj.autoload(tls.MULTI_ENTRY) and not p.obj.autoload(tls.MULTI_RETURN)
        path, dev, ino = system_libssl()
        assert p.consider(path, dev, ino, strict=True)
        assert len(p.obj.attached) == 10 and not any(":multi:" in k for k in p.obj.attached)
    finally:
        p.close()


def test_cookies_must_match_the_offsets(sock, probes):
    path, _, _ = system_libssl()
    with pytest.raises(loader.AttachError, match="2 offsets, 1 cookies"):
        probes.obj.attach_uprobe_multi(tls.MULTI_ENTRY, path, [0, 8], [1])
    assert probes.obj.attached == []


def test_a_program_loaded_for_uprobe_multi_takes_no_plain_uprobe(sock, probes):
    """Why the mode is decided before loading."""
    path, _, _ = system_libssl()
    off = tls.symbol_offsets(path)["SSL_read"]
    with pytest.raises(loader.AttachError):
        probes.obj.attach_uprobe(tls.MULTI_ENTRY, path, off)


def test_tls_hook_enum_matches_btf():
    from tests.unit.btfcheck import assert_enum_matches, btf_types

    assert_enum_matches(btf_types("tls"), "tls_hook", tls.TlsHook)
    assert set(tls.HOOK_COOKIES) == set(tls.HOOKS)
