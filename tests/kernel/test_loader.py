"""Real programs, real syscalls, real events: the loader and sock.bpf.o."""

import os
import socket
import time

import pytest

from tests.kernel.conftest import require
from tracer import events, loader
from tracer.agent import EXIT_PROGRAMS, load_sock
from tracer.events import ConnRole, DataDir, SysKind


def _drain(rb, until, timeout=3.0):
    """Consume decoded events until until(events) is true or the timeout passes."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rb.poll(50)
        rb.consume(lambda b, o, n: got.append(events.decode(b, o, n)))
        if until(got):
            break
    return got


def _in_child(fn):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def _child_sends_to(listener, fn) -> int:
    """fn() in a forked child that connects to listener; the parent accepts
    and reads until EOF. The child's pid once it has exited."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    conn, _ = listener.accept()
    while conn.recv(65536):
        pass
    conn.close()
    os.waitpid(pid, 0)
    return pid


def test_23_connects_give_23_open_events(sock_obj, listener):
    load_sock(sock_obj)
    sock_obj.attach_all()
    rb = sock_obj.ring_buffer("events")
    port = listener.getsockname()[1]

    def child():
        for _ in range(23):
            socket.create_connection(("127.0.0.1", port)).close()

    pid = _in_child(child)
    mine = lambda evs: [e for e in evs if e.pid == pid and isinstance(e, events.OpenEvent)]  # noqa: E731
    got = _drain(rb, lambda evs: len(mine(evs)) >= 23)
    opens = mine(got)
    assert len(opens) == 23
    assert {e.role for e in opens} == {ConnRole.ROLE_CLIENT}
    assert {(e.raddr, e.rport) for e in opens} == {("127.0.0.1", port)}
    assert len({e.conn_id for e in opens}) == 23
    assert all(e.netns == os.stat("/proc/self/ns/net").st_ino for e in opens)
    closes = [e for e in got if e.pid == pid and isinstance(e, events.CloseEvent)]
    assert {e.conn_id for e in closes} == {e.conn_id for e in opens}
    # nothing was lost on the way
    counters = sock_obj.map("counters")
    assert counters.percpu_sum(events.Counter.CTR_DROPPED) == 0


@pytest.mark.parametrize("exit_prog", EXIT_PROGRAMS)
def test_every_send_and_recv_flavour_is_captured(sock_obj, listener, exit_prog):
    """write/send/sendto/sendmsg/writev and read/recv/recvfrom/recvmsg/readv:
    each gives one data event with the exact bytes and the syscall's count,
    through either exit program (bpf_loop, or the bounded loop of kernels
    before 5.17)."""
    assert load_sock(sock_obj, exit_prog) == exit_prog
    sock_obj.attach_all()
    rb = sock_obj.ring_buffer("events")
    port = listener.getsockname()[1]
    msgs = [b"write-%d " % i * 3 for i in range(5)]

    def child():
        c = socket.create_connection(("127.0.0.1", port))
        fd = c.fileno()
        os.write(fd, msgs[0])
        c.send(msgs[1])
        c.sendto(msgs[2], ("127.0.0.1", port))
        c.sendmsg([msgs[3][:5], msgs[3][5:]])
        os.writev(fd, [msgs[4][:7], msgs[4][7:]])
        # now read the echoes with the other flavours
        n = [len(m) for m in msgs]
        os.read(fd, n[0])
        c.recv(n[1])
        c.recvfrom(n[2])
        c.recvmsg(n[3])
        os.readv(fd, [bytearray(4), bytearray(n[4] - 4)])
        c.close()

    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child()
        except BaseException:
            code = 1
        os._exit(code)
    conn, _ = listener.accept()
    for m in msgs:
        data = b""
        while len(data) < len(m):
            data += conn.recv(len(m) - len(data))
        assert data == m
        conn.sendall(m)  # echo; the child reads each one back with a different flavour
        time.sleep(0.02)  # one message per read on the child side
    _, status = os.waitpid(pid, 0)
    conn.close()
    assert os.waitstatus_to_exitcode(status) == 0

    def data_of(evs):
        return [e for e in evs if e.pid == pid and isinstance(e, events.DataEvent)]

    got = data_of(_drain(rb, lambda evs: len(data_of(evs)) >= 10))
    egress = [e for e in got if e.direction == DataDir.DIR_EGRESS]
    ingress = [e for e in got if e.direction == DataDir.DIR_INGRESS]
    assert [e.syscall for e in egress] == [SysKind.SYS_WRITE, SysKind.SYS_SENDTO, SysKind.SYS_SENDTO,
                                          SysKind.SYS_SENDMSG, SysKind.SYS_WRITEV]
    assert [e.payload for e in egress] == msgs
    assert [e.size for e in egress] == [len(m) for m in msgs]
    assert [e.syscall for e in ingress] == [SysKind.SYS_READ, SysKind.SYS_RECVFROM,
                                           SysKind.SYS_RECVFROM, SysKind.SYS_RECVMSG,
                                           SysKind.SYS_READV]
    assert [e.payload for e in ingress] == msgs
    assert len({e.conn_id for e in got}) == 1
    assert all(e.ts_enter <= e.ts_exit for e in got)


def test_capture_is_bounded_but_size_is_exact(sock_obj, listener):
    sock_obj.set_rodata(capture_bytes=64)
    load_sock(sock_obj)
    sock_obj.attach_all()
    rb = sock_obj.ring_buffer("events")
    port = listener.getsockname()[1]
    body = bytes(range(256)) * 40  # 10240 bytes

    def child():
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(body)
        c.close()

    pid = _child_sends_to(listener, child)

    def sends(evs):
        return [e for e in evs if e.pid == pid and isinstance(e, events.DataEvent)]

    got = sends(_drain(rb, lambda evs: sum(e.size for e in sends(evs)) >= len(body)))
    assert sum(e.size for e in got) == len(body)
    assert got[0].payload == body[:64]
    assert all(len(e.payload) == min(64, e.size) for e in got)


def test_port_filter_in_kernel(sock_obj, listener):
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(8)
    load_sock(sock_obj)
    port, other_port = listener.getsockname()[1], other.getsockname()[1]
    sock_obj.map("filter_ports").update(port.to_bytes(2, "little"), b"\x01")
    sock_obj.map("filter_cfg").update(0, bytes(events.FilterConfigC(0, 0, 0, 1)))
    sock_obj.attach_all()
    rb = sock_obj.ring_buffer("events")

    def child():
        for _ in range(7):
            socket.create_connection(("127.0.0.1", other_port)).close()
        for _ in range(5):
            socket.create_connection(("127.0.0.1", port)).close()

    pid = _in_child(child)
    other.close()

    def opens(evs):
        return [e for e in evs if e.pid == pid and isinstance(e, events.OpenEvent)]

    got = opens(_drain(rb, lambda evs: len(opens(evs)) >= 5))
    assert len(got) == 5
    assert {e.rport for e in got} == {port}


def test_full_ring_buffer_losses_are_counted_exactly(sock_obj, listener):
    """A 4 KiB ring that nobody reads fills up: every event is either delivered
    or counted as dropped, none vanish."""
    sock_obj.set_max_entries("events", 4096)
    load_sock(sock_obj)
    sock_obj.attach_all()
    rb = sock_obj.ring_buffer("events")
    port = listener.getsockname()[1]

    def child():
        c = socket.create_connection(("127.0.0.1", port))
        for _ in range(200):
            c.send(b"x" * 300)
        c.close()

    _child_sends_to(listener, child)
    for prog in list(sock_obj.attached):
        sock_obj.detach(prog)
    delivered = rb.consume(lambda b, o, n: None)
    c = sock_obj.map("counters")
    seen = c.percpu_sum(events.Counter.CTR_EVENTS)
    dropped = c.percpu_sum(events.Counter.CTR_DROPPED)
    assert dropped > 0
    assert seen == delivered + dropped


def test_load_failure_carries_the_verifier_log(sock_features):
    require("btf")
    with loader.BPFObject.open(loader.object_path("features")) as obj:
        for p in obj.programs:
            obj.set_autoload(p, p == "probe_write_user")
        if obj.autoload("probe_write_user"):
            try:
                obj.load()
            except loader.LoadError as e:
                assert e.stage == "load"
                assert "probe_write_user" in e.log
                assert "processed" in e.log or "unknown func" in e.log
                assert "\n" not in str(e)
                return
    pytest.skip("bpf_probe_write_user is allowed on this kernel: nothing is refused")


def test_open_and_configure_errors_are_typed(tmp_path):
    with pytest.raises(loader.OpenError, match="not found"):
        loader.BPFObject.open(tmp_path / "missing.bpf.o")
    bad = tmp_path / "bad.bpf.o"
    bad.write_bytes(b"not an elf")
    with pytest.raises(loader.OpenError, match="cannot open bad.bpf.o"):
        loader.BPFObject.open(bad)
    with loader.BPFObject.open(loader.object_path("sock")) as obj:
        with pytest.raises(loader.OpenError, match="no rodata variable 'nope'"):
            obj.set_rodata(nope=1)
        with pytest.raises(loader.MapError, match="no map"):
            obj.map("nope")


def test_records_that_wrap_the_ring_arrive_whole(sock_obj, listener):
    """The data area is mapped once (not twice, as the kernel offers): a record
    that runs past its end is copied into one piece. A 16 KiB ring, 200
    messages of 100..499 distinct bytes sent in lock-step with the consumer
    (no drop possible): every payload arrives intact and in order, and
    several of them wrapped. Only this test's child is traced: other traffic
    on the machine would fill so small a ring."""
    sock_obj.set_max_entries("events", 16384)
    load_sock(sock_obj)
    sock_obj.map("filter_cfg").update(0, bytes(events.FilterConfigC(1, 0, 0, 0)))
    sock_obj.map("filter_pids").update(os.getpid(), b"\x01")  # the fork follows
    sock_obj.attach_all()
    rb = sock_obj.ring_buffer("events")
    port = listener.getsockname()[1]
    msgs = [bytes((i + k) % 251 for k in range(100 + i * 37 % 400)) for i in range(200)]
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(go_w)
            c = socket.create_connection(("127.0.0.1", port))
            for m in msgs:
                if os.read(go_r, 1) != b"g":
                    break
                c.sendall(m)
            else:
                code = 0
            c.close()
        finally:
            os._exit(code)
    os.close(go_r)
    conn, _ = listener.accept()
    got = []

    def on(buf, off, size):
        ev = events.decode(buf, off, size)
        if ev.pid == pid and isinstance(ev, events.DataEvent):
            got.append(ev.payload)

    try:
        for i, m in enumerate(msgs):
            os.write(go_w, b"g")
            data = b""
            while len(data) < len(m):
                data += conn.recv(len(m) - len(data))
            deadline = time.monotonic() + 10
            while len(got) <= i and time.monotonic() < deadline:
                rb.poll(10)
                rb.consume(on)
            assert len(got) == i + 1, (i, len(got))
    finally:
        os.close(go_w)
        conn.close()
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == msgs
    assert rb.wrapped >= 3, rb.wrapped
    assert sock_obj.map("counters").percpu_sum(events.Counter.CTR_DROPPED) == 0


def test_a_signal_ends_a_long_poll_and_the_wakeup_fd_is_put_back(sock_obj):
    """The agent waits up to POLL_MS for the ring; a signal (SIGINT, SIGTERM:
    a stop) must not wait for that timeout. Nothing is attached, so the ring
    stays empty: only the signal can end the poll before its 20 s."""
    import signal
    import time

    load_sock(sock_obj)
    rb = sock_obj.ring_buffer("events")
    old = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        assert rb.wake_on_signals()
        assert not rb.wake_on_signals()  # once per ring
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        assert rb.poll(20_000) is False  # woken, and nothing to read
        assert time.monotonic() - t0 < 10
        rb.close()
        assert signal.set_wakeup_fd(-1) == -1  # close() put the previous state back
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _fdinfo(fd: int) -> dict[str, str]:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_uprobe_multi_link_is_an_fd_the_object_owns():
    """attach_uprobe_multi makes one kernel link (bpf(2) BPF_LINK_CREATE, not
    libbpf) holding every offset; link_fd gives it (the broker passes it on),
    detach and close release it."""
    require("uprobe")
    ok, why = loader.uprobe_multi()
    if not ok:
        pytest.skip(f"kernel feature missing: uprobe_multi ({why})")
    from tracer import tls

    lib = next((p for p in tls.SYSTEM_LIBS if os.path.exists(p)), None)
    if lib is None:
        pytest.skip("no system libssl")
    offs = tls.symbol_offsets(lib)
    with loader.BPFObject.open(loader.object_path("features")) as obj:
        for p in obj.programs:
            obj.set_autoload(p, p == "probe_uprobe")
        obj.set_expected_attach_type("probe_uprobe", loader.BPF_TRACE_UPROBE_MULTI)
        obj.load()
        # a program that returns 0, on two functions
        key = obj.attach_uprobe_multi("probe_uprobe", lib, [offs["SSL_read"], offs["SSL_write"]],
                                      [3, 4])
        assert obj.attached == [key] == [f"probe_uprobe@{lib}:multi:-1"]
        fd = obj.link_fd(key)
        info = _fdinfo(fd)
        assert info["link_type"] == "uprobe_multi"
        assert info["prog_id"] == _fdinfo(obj.prog_fd("probe_uprobe"))["prog_id"]
        obj.detach(key)
        assert obj.attached == []
        with pytest.raises(OSError):
            os.fstat(fd)
        obj.attach_uprobe_multi("probe_uprobe", lib, [offs["SSL_read"]], retprobe=True)
        fd = obj.link_fd(obj.attached[0])
    with pytest.raises(OSError):  # closed with the object
        os.fstat(fd)
