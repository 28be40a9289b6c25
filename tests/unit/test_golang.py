"""Go executables and the goroutine join (tracer/golang.py), without root:
the mirror of golang.h against the object's BTF, what is read from real Go
binaries (version, pclntab, RET instructions, DWARF offsets), bad input, and
the correlator's goroutine link on synthetic events."""

from __future__ import annotations

import ctypes
import re
import struct

import pytest

from tests.unit.btfcheck import assert_struct_matches, btf_types
from tests.unit.synth import (
    ROLE_CLIENT,
    ROLE_SERVER,
    Clock,
    Conversation,
    feed,
    http_request,
    http_response,
)
from tracer import golang, loader
from tracer.conn import ConnectionTable
from tracer.stats import Stats
from tracer.symbols.rawelf import SHT_SYMTAB, RawElf, Section, file_reader

# -- the mirror -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def btf():
    return btf_types("golang")


@pytest.mark.parametrize("cname", sorted(golang.STRUCTS))
def test_struct_layout_matches_btf(btf, cname):
    assert_struct_matches(btf, cname, golang.STRUCTS[cname])


@pytest.mark.parametrize("ename", sorted(golang.ENUMS))
def test_enum_values_match_btf(btf, ename):
    t = btf[("ENUM", ename)]
    assert {v["name"]: v["val"] for v in t["values"]} == golang.ENUMS[ename]


def test_constants_match_header():
    text = (loader.BPF_DIR / "golang.h").read_text()
    for name in ("GO_MAX_DEPTH", "GO_MAX_BINARIES"):
        assert re.search(rf"^#define {name} {getattr(golang, name)}\b", text, re.M), name
    assert golang._CALL.size == ctypes.sizeof(golang.GoCallC)


# -- real Go executables --------------------------------------------------------------


@pytest.fixture(scope="module")
def gobins(tmp_path_factory):
    from workloads.go import build

    try:
        version = build.version()
    except build.GoMissing as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp("go")
    return {"version": version, "plain": build.build(out, "front"),
            "stripped": build.build(out, "front", stripped=True)}


def _elf(path):
    f = open(path, "rb")  # noqa: SIM115 - closed by the caller's fixture scope
    return f, RawElf(file_reader(f.fileno()))


def test_version_from_buildinfo_survives_stripping(gobins):
    for kind in ("plain", "stripped"):
        f, elf = _elf(gobins[kind])
        with f:
            assert golang.build_version(elf) == gobins["version"]


def test_pclntab_gives_the_symbol_table_addresses_even_when_stripped(gobins):
    f, elf = _elf(gobins["plain"])
    with f:
        syms = {s.name: s.vaddr for s in elf.function_symbols(SHT_SYMTAB)}
        plain = golang.pclntab_functions(elf, golang.HOOKS)
    f, elf = _elf(gobins["stripped"])
    with f:
        assert elf.function_symbols(SHT_SYMTAB) == []  # really stripped
        stripped = golang.pclntab_functions(elf, golang.HOOKS)
    linked = set(golang.HOOKS) - {golang.GRPC_SERVE}  # a net/http front has no grpc-go
    assert set(plain) == linked
    assert {n: lo for n, (lo, _) in plain.items()} == {n: syms[n] for n in linked}
    assert stripped == plain  # -s -w leaves the code where it was
    for lo, hi in plain.values():
        assert 0 < hi - lo < 1 << 16


def test_return_probes_sit_on_ret_instructions(gobins):
    b = golang.GoBinary.inspect(str(gobins["stripped"]))
    data = gobins["stripped"].read_bytes()
    assert set(b.rets) == {golang.SERVE, golang.NEWPROC}
    for func, offs in b.rets.items():
        assert offs, func
        for off in offs:
            assert data[off] == 0xC3 and b.entry[func] < off, (func, off)


def test_offsets_from_dwarf_or_the_version_table(gobins):
    plain = golang.GoBinary.inspect(str(gobins["plain"]))
    stripped = golang.GoBinary.inspect(str(gobins["stripped"]))
    assert (plain.offsets_from, stripped.offsets_from) == ("dwarf", "table")
    assert plain.version == stripped.version == gobins["version"]
    # the table is right for this toolchain: its own DWARF says so
    assert plain.offsets == stripped.offsets == golang.table_offsets(
        golang.parse_version(gobins["version"]))
    with open(gobins["stripped"], "rb") as f:
        assert golang.dwarf_offsets(f) is None


def test_ret_offsets_decode_instructions_not_bytes():
    pytest.importorskip("capstone")
    # push rbp; mov ebx, eax (89 c3: a 0xc3 byte that is no RET); ret; int3 padding
    code = b"\x55\x89\xc3\xc3\xcc\xcc"
    assert golang.ret_offsets(code, 0x1000) == [0x1003]
    with pytest.raises(golang.Unsupported, match="cannot disassemble"):
        golang.ret_offsets(b"\x55\xc3\x0f\xff\xff", 0x1000)  # an undecodable tail


@pytest.mark.parametrize("text, want", [
    ("go1.19.8", (1, 19)), ("go1.21rc2", (1, 21)), ("go1.22", (1, 22)),
    ("devel go1.23-abc", None), ("", None), ("go1", None)])
def test_parse_version(text, want):
    assert golang.parse_version(text) == want


def test_table_offsets_only_for_known_versions():
    assert golang.table_offsets((1, 16)) is None
    assert golang.table_offsets((1, 17)) == golang.table_offsets((1, 24)) is not None
    assert golang.table_offsets((1, 99)) is None


def test_bad_input_is_a_reason_not_a_traceback(tmp_path, gobins):
    import sys

    with pytest.raises(golang.NotGo):
        golang.GoBinary.inspect(sys.executable)  # ELF, not Go
    text = tmp_path / "text"
    text.write_bytes(b"#!/bin/sh\necho hi\n")
    with pytest.raises(golang.NotGo):
        golang.GoBinary.inspect(str(text))
    # a Go executable cut short: its .gopclntab is gone past the end
    cut = tmp_path / "cut"
    cut.write_bytes(gobins["stripped"].read_bytes()[:1 << 20])
    with pytest.raises((golang.NotGo, golang.Unsupported)):
        golang.GoBinary.inspect(str(cut))


def test_unsupported_binary_is_named_once(tmp_path, gobins, caplog):
    """A Go executable without DWARF, of a version not in the table: one line
    naming it and why; it is remembered, never attached."""
    src = gobins["stripped"].read_bytes()
    i = src.index(b"\xff Go buildinf:")
    n = src[i + 32]  # Go >= 1.18: the version inline after a length byte
    fake = src[:i + 33] + b"go1.99.0".ljust(n, b"0")[:n] + src[i + 33 + n:]
    path = tmp_path / "future"
    path.write_bytes(fake)
    with pytest.raises(golang.Unsupported, match="no DWARF and no known struct offsets"):
        golang.GoBinary.inspect(str(path))

    class Obj:
        attached: list = []

    probes = golang.GoProbes(Obj())
    with caplog.at_level("WARNING", logger="tracer.golang"):
        assert not probes.consider(str(path), "/srv/future", (1, 2))
    assert [r.getMessage() for r in caplog.records] == [
        "Go: /srv/future: go1.99.0" + "0" * (n - 8) + ": no DWARF and no known struct offsets "
        "for this version; its processes keep the other correlation links"]
    assert probes.refused == {(1, 2): probes.unsupported["/srv/future"]}


def test_older_pclntab_is_refused_by_name():
    raw = struct.pack("<IBBBB", 0xFFFFFFFB, 0, 0, 1, 8) + b"\0" * 120

    class Elf:
        sections = []

        def section(self, name):
            return Section(name, 1, 0, 0, len(raw), 0) if name == ".gopclntab" else None

        def read(self, off, size):
            return raw[off:off + size]

    with pytest.raises(golang.Unsupported, match="pclntab magic 0xfffffffb"):
        golang.pclntab_functions(Elf(), golang.HOOKS)


# -- the join ---------------------------------------------------------------------------
FRONT = 500


class GoFront:
    """A Go front (pid 500) under load: server connections 11-13 (one request
    each), pooled client connections 21-22 to the backend. Goroutines move
    between threads 501-503, and a pooled connection is written by its
    writeLoop goroutine, on whatever thread runs it."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.table_spans: list = []
        self.table = ConnectionTable(self.table_spans.append, Stats())
        self.srv = {i: Conversation(self.clock, 10 + i, ROLE_SERVER, pid=FRONT, tid=501,
                                    comm="front", laddr="10.0.0.1", lport=8080,
                                    raddr="10.0.0.9", rport=40000 + i) for i in (1, 2, 3)}
        self.cli = {c: Conversation(self.clock, c, ROLE_CLIENT, pid=FRONT, tid=503,
                                    comm="front", laddr="10.0.0.1", lport=50000 + c,
                                    raddr="10.0.0.2", rport=8081) for c in (21, 22)}
        for conv in (*self.srv.values(), *self.cli.values()):
            feed(self.table, [conv.open()])

    def read_request(self, i: int, tid: int) -> int:
        feed(self.table, self.srv[i].request(http_request("GET", f"/front/{i}"), tid=tid))
        return self.clock.t  # ServeHTTP entry: after the read

    def call(self, conn: int, i: int, tid: int) -> None:
        c = self.cli[conn]
        feed(self.table, c.request(http_request("GET", f"/ok/{i}"), tid=tid))
        feed(self.table, c.response(http_response(200, body=b"ok"), tid=tid))

    def respond(self, i: int, tid: int) -> None:
        feed(self.table, self.srv[i].response(http_response(200, body=b"front"), tid=tid))

    def spans(self) -> dict[str, dict]:
        self.table.correlator.close()
        return {s.path: s for s in self.table_spans}


def _run(hooked: bool):
    """Three requests in flight; the thread that writes each call is not the
    thread that read its request (what the Go scheduler does)."""
    front = GoFront()
    rt = golang.GoRuntime()
    rt.index = golang.CallIndex(front.table)
    if hooked:
        front.table.correlator.runtime_parents.append(rt.parent)
    serve = {1: front.read_request(1, tid=501), 2: front.read_request(2, tid=502),
             3: front.read_request(3, tid=501)}

    def roundtrip(conn, i):  # the handler's goroutine enters persistConn.roundTrip
        rt.index.add(front.clock.t, conn, 10 + i, serve[i])
        front.clock.advance(1000)

    roundtrip(21, 1)
    front.call(21, 1, tid=503)  # writeLoop of conn 21 on thread 503
    roundtrip(22, 2)
    front.call(22, 2, tid=501)  # thread 501 read requests 1 and 3: ambiguous
    front.respond(1, tid=503)
    roundtrip(21, 3)
    front.call(21, 3, tid=502)  # thread 502 read request 2 only: the wrong parent
    front.respond(2, tid=501)
    front.respond(3, tid=502)
    return front.spans(), rt.index


def test_goroutine_links_are_exact_where_threads_are_wrong():
    spans, index = _run(hooked=True)
    for i in (1, 2, 3):
        call, req = spans[f"/ok/{i}"], spans[f"/front/{i}"]
        assert (call.parent_span_id, call.trace_id) == (req.span_id, req.trace_id), i
        assert (call.correlation_source, call.correlation_confidence) == ("thread", 1.0)
    assert (index.links, index.no_call, index.no_server, index.records) == (3, 0, 0, 3)


def test_without_the_hook_the_thread_link_is_wrong_for_go():
    """The regression the hook fixes: a writeLoop on the thread that read
    another request takes that request as parent."""
    spans, _ = _run(hooked=False)
    call3 = spans["/ok/3"]
    assert call3.parent_span_id == spans["/front/2"].span_id  # wrong, with 0.9
    assert call3.correlation_source == "thread"
    assert spans["/ok/2"].parent_span_id is None  # ambiguous: none


def test_a_go_process_call_without_a_record_gets_no_thread_link():
    """A call of a process the Go add-on follows that its hook cannot name
    (the record is missing) stays a root: the thread that wrote it tells
    nothing about its request (without the add-on, request 3's call took
    request 2, the thread's, as its parent: test above)."""
    front = GoFront()
    rt = golang.GoRuntime()
    rt.index = golang.CallIndex(front.table)
    front.table.correlator.runtime_parents.append(rt.parent)
    front.table.correlator.runtime_pids.append({FRONT})
    front.read_request(2, tid=502)
    front.read_request(3, tid=501)
    front.call(21, 3, tid=502)  # no roundTrip record for it
    front.respond(2, tid=501)
    front.respond(3, tid=502)
    spans = front.spans()
    assert spans["/ok/3"].parent_span_id is None
    assert spans["/ok/3"].correlation_source == "none"
    assert front.table.stats.correlation_ambiguous == 1
    assert rt.index.no_call == 0  # the unit's GoRuntime has no probes: not counted there


def test_no_record_or_no_server_request_falls_back():
    front = GoFront()
    rt = golang.GoRuntime()
    rt.index = golang.CallIndex(front.table)
    front.table.correlator.runtime_parents.append(rt.parent)
    serve1 = front.read_request(1, tid=501)
    front.call(21, 1, tid=501)
    rt.index.add(front.clock.t, 21, 11, serve1)  # made after that call started: not its
    front.respond(1, tid=501)
    front.read_request(2, tid=502)
    rt.index.add(front.clock.t, 21, 11, serve1)  # names request 1, which is over
    front.call(21, 2, tid=502)
    front.respond(2, tid=502)
    spans = front.spans()
    for i in (1, 2):  # the thread links, as without the add-on
        assert spans[f"/ok/{i}"].parent_span_id == spans[f"/front/{i}"].span_id
        assert spans[f"/ok/{i}"].correlation_source == "thread"
    assert (rt.index.links, rt.index.no_server) == (0, 1)


def test_records_are_taken_in_order_bounded_and_expire():
    index = golang.CallIndex(table=None)
    n = golang.CALLS_PER_CONN + 3
    for i in range(n):
        index.add(1000 + 10 * i, 7, 11, 900, i % 2)
    assert len(index.calls[7]) == golang.CALLS_PER_CONN  # the oldest dropped
    assert index.find(7, 1025) is None
    # the agent reads requests in order: the latest record before one is its,
    # and the older ones (calls never written) go with it
    assert index.find(7, 1000 + 10 * 5 + 1) == (1050, 11, 900, 1)
    assert index.calls[7][0][0] == 1060
    assert index.find(7, 1000 + 10 * 5 + 2) is None  # taken already
    # a call whose request was never written is not a much later request's
    index.add(100, 9, 11, 50)
    assert index.find(9, 100 + golang.CALL_TO_WRITE_NS + 1) is None
    assert index.stale == 1 and 9 not in index.calls
    index.add(5, 8, 11, 1)
    last = 1000 + 10 * (n - 1)
    index.expire(last + golang.RECORD_KEEP_NS)  # conn 7's last record is just that old
    assert list(index.calls) == [7]
    index.expire(last + golang.RECORD_KEEP_NS + 1)
    assert index.calls == {}


def test_records_decode_from_ring_bytes():
    index = golang.CallIndex(table=None)
    rec = golang.GoCallC(golang.GO_REC_CALL, 2, 0, FRONT, 5000, 21, 11, 4000, 7)
    raw = bytes(rec)
    index.on_record(memoryview(b"\0" * 8 + raw), 8, len(raw))
    index.on_record(memoryview(raw[:-1]), 0, len(raw) - 1)  # short: ignored
    assert index.find(21, 6000) == (5000, 11, 4000, 7)
    assert index.records == 1


def test_idle_summary_has_the_running_keys():
    assert set(golang.GoRuntime.idle()) == {
        "go_binaries", "go_unsupported", "go_unavailable", "go_links", "go_link_misses",
        "go_records", "go_processes", "go_unreadable_processes", "go_exec_discovery",
        "go_kernel", "go_probe_ns"}
    assert set(golang.GoRuntime.idle()["go_kernel"]) == set(golang.COUNTERS)



# -- attaching (a fake BPF object: no root) -------------------------------------------
class FakeObj:
    def __init__(self, fail_on: str = "") -> None:
        self.links: list[tuple] = []
        self.offsets: dict[int, bytes] = {}
        self.fail_on = fail_on
        self.detached: list = []

    @property
    def attached(self) -> list:
        return [f"{p}@{path}:{off}#{c}" for p, path, off, c in self.links]

    def map(self, name):
        assert name == "go_offsets"
        obj = self

        class M:
            def update(self, key, value, flags=0):
                obj.offsets[key] = value

        return M()

    def attach_uprobe(self, prog, path, off, pid=-1, retprobe=False, cookie=0):
        assert pid == -1 and not retprobe  # every process of the file; never a uretprobe
        if prog == self.fail_on:
            raise loader.AttachError(f"cannot attach uprobe {prog}: EPERM", program=prog)
        self.links.append((prog, path, off, cookie))

    def detach(self, key):
        self.detached.append(key)


@pytest.fixture
def running_front(gobins):
    import subprocess

    p = subprocess.Popen([str(gobins["stripped"]), "-listen", "127.0.0.1:0"],
                         stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        yield p.pid
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def test_a_running_go_process_is_attached_once_per_executable(gobins, running_front):
    obj = FakeObj()
    probes = golang.GoProbes(obj)
    reply = probes.attach_pid(running_front)
    b = golang.GoBinary.inspect(str(gobins["stripped"]))
    assert reply == {"binary": f"{gobins['stripped']} ({b.version}, offsets from table)",
                     "unsupported": ""}
    assert obj.offsets == {0: bytes(b.offsets.c())}  # slot 0, filled before any probe
    want = []
    for func, (entry, ret) in golang.HOOKS.items():
        if func in b.entry:
            want += [(ret, off) for off in b.rets.get(func, ())] + [(entry, b.entry[func])]
    assert [(prog, off) for prog, _, off, _ in obj.links] == want
    assert {(path, c) for _, path, _, c in obj.links} == {(f"/proc/{running_front}/exe", 0)}
    assert probes.pids == {running_front}
    probes.attach_pid(running_front)  # the same inode again: nothing more
    assert len(obj.links) == len(want)


def test_a_failed_attach_leaves_nothing_attached(gobins, running_front, caplog):
    obj = FakeObj(fail_on="go_roundtrip")  # the last one
    probes = golang.GoProbes(obj)
    with caplog.at_level("WARNING", logger="tracer.golang"):
        reply = probes.attach_pid(running_front)
    assert reply["binary"] == "" and "EPERM" in reply["unsupported"]
    assert sorted(obj.detached) == sorted(obj.attached)  # all that went in came out
    assert len(caplog.records) == 1


def test_after_the_split_the_broker_attaches():
    class Client:
        def __init__(self, replies):
            self.replies, self.asked = replies, []

        def request(self, op, **fields):
            self.asked.append((op, fields))
            return self.replies.pop(0), []

    rt = golang.GoRuntime()
    assert rt.broker_ops() == {}  # not started: nothing for the broker to do
    rt.probes = golang.GoProbes(FakeObj())
    # what the broker runs for the agent: pid only, and a positive one
    (fields, handler), = rt.broker_ops().values()
    assert list(rt.broker_ops()) == ["attach_go"] and fields == {"pid": int}
    with pytest.raises(ValueError):
        handler(pid=0)
    client = Client([{"ok": True, "binary": "/srv/front (go1.19.8, offsets from table)",
                      "unsupported": ""}, {"ok": False, "refused": "attach_go: no"}])
    rt.separated(client)
    assert rt.broker_refused == ""
    rt._ask_broker(42)
    assert list(rt.probes.binaries.values()) == ["/srv/front (go1.19.8, offsets from table)"]
    assert rt.probes.pids == {42}
    rt._ask_broker(43)
    assert client.asked == [("attach_go", {"pid": 42}), ("attach_go", {"pid": 43})]
    assert rt.broker_refused == "attach_go: no"  # said once; not asked again


def test_inspection_runs_in_a_child_with_the_same_answer(gobins, monkeypatch):
    for kind in ("plain", "stripped"):
        path = str(gobins[kind])
        assert golang.inspect_isolated(path) == golang.GoBinary.inspect(path)
    import sys

    with pytest.raises(golang.NotGo):  # told apart without a child
        golang.inspect_isolated(sys.executable)
    monkeypatch.setattr(golang.sys, "executable", "/bin/false")  # a child that fails
    with pytest.raises(golang.Unsupported, match=r"inspection failed \(exit 1: no output\)"):
        golang.inspect_isolated(str(gobins["stripped"]))


# -- grpc-go: the server request is one HTTP/2 stream ----------------------------------
def _grpc_front(with_stream: bool):
    """A grpc-go front (pid 500): RPCs 1 and 3 are streams of one HTTP/2
    connection (conn 11), read in one read; their handlers' goroutines call
    the backend on pooled connections 21 and 22, RPC 3's first."""
    from tests.unit.h2synth import H2Pair, grpc_frame

    front = GoFront()
    rt = golang.GoRuntime()
    rt.index = golang.CallIndex(front.table)
    front.table.correlator.runtime_parents.append(rt.parent)
    p = H2Pair()
    sids = [p.request("POST", "/front.Front/Call", {"x-request-id": str(i)},
                      grpc_frame(b"%d" % i), grpc=True, flush=False) for i in (1, 2)]
    p.flush_client()
    h2 = Conversation(front.clock, 31, ROLE_SERVER, capture_bytes=4096, pid=FRONT, tid=501,
                      comm="front", laddr="10.0.0.1", lport=9090, raddr="10.0.0.9",
                      rport=41000)
    feed(front.table, [h2.open()])
    for direction, data in p.chunks:
        ev = h2.syscall(h2.request_dir if direction == "c2s" else h2.response_dir, data)
        feed(front.table, [ev])
    serve = front.clock.t  # handleStream entries: after the read
    for conn, sid in ((21, sids[1]), (22, sids[0])):  # the second RPC calls first
        rt.index.add(front.clock.t, conn, 31, serve, sid if with_stream else 0)
        front.clock.advance(1000)
        front.call(conn, sid, tid=502)
    skip = len(p.chunks)
    for sid in sids:
        p.respond(sid, 200, {"content-type": "application/grpc"}, grpc_frame(b"ok"),
                  {"grpc-status": "0"})
    for direction, data in p.chunks[skip:]:
        feed(front.table, [h2.syscall(h2.request_dir if direction == "c2s" else h2.response_dir,
                                      data, tid=503)])
    front.table.correlator.close()
    rpcs = {s.attributes()["http.request.header.x-request-id"]: s for s in front.table_spans
            if s.kind == "server"}
    calls = {s.path: s for s in front.table_spans if s.kind == "client"}
    assert len(rpcs) == len(calls) == 2
    return rpcs, calls, rt.index


def test_grpc_calls_join_their_rpc_by_stream_id():
    rpcs, spans, index = _grpc_front(with_stream=True)
    for i, sid in (("1", 1), ("2", 3)):
        call = spans[f"/ok/{sid}"]
        assert (call.parent_span_id, call.trace_id) == (rpcs[i].span_id, rpcs[i].trace_id)
        assert (call.correlation_source, call.correlation_confidence) == ("thread", 1.0)
    assert (index.links, index.no_server) == (2, 0)


def test_grpc_calls_without_the_stream_id_find_no_rpc():
    """The stream id is what tells the RPCs of one connection apart: keyed by
    the connection alone the records name no server request (none is keyed
    so), and the calls fall back to the thread links."""
    _, spans, index = _grpc_front(with_stream=False)
    assert (index.links, index.no_server) == (0, 2)
    assert spans["/ok/1"].correlation_confidence != 1.0


def _modinfo(*lines: str) -> str:
    return "\n".join(["path\tsvc", "mod\tsvc\t(devel)\t", *lines]) + "\n"


@pytest.mark.parametrize("modinfo, want", [
    (_modinfo("dep\tgoogle.golang.org/grpc\tv1.33.3\th1:x="), "v1.33.3"),
    (_modinfo("dep\tgoogle.golang.org/grpc\tv1.33.3\t", "=>\t../grpc\t(devel)\t"), "v1.33.3"),
    (_modinfo("dep\tgoogle.golang.org/grpc\tv1.2.0\t", "=>\tfork/grpc\tv1.33.1\th1:y="),
     "v1.33.1"),
    (_modinfo("dep\tgoogle.golang.org/grpc/examples\tv0.1.0\t"), None),
    ("", None),
])
def test_grpc_version_from_build_info(modinfo, want):
    assert golang.module_version(modinfo, golang.GRPC_MODULE) == want


@pytest.mark.parametrize("version, known", [
    ("v1.33.3", True), ("v1.33.0", True), ("v1.34.0", False), ("v1.32.9", False),
    ("v0.0.0-20200413115906-b5235f65be36", False), ("v1.33.4-0.20210101000000-abc", False),
    ("(devel)", False), ("unknown", False)])
def test_grpc_table_only_for_known_versions(version, known):
    assert (golang.grpc_table_offsets(version) is not None) == known


@pytest.fixture(scope="module")
def grpcbins(tmp_path_factory):
    from workloads.go_grpc import build

    try:
        out = tmp_path_factory.mktemp("gogrpc")
        return {"grpc": build.requirements()[golang.GRPC_MODULE], "plain": build.build(out),
                "stripped": build.build(out, stripped=True)}
    except build.GoMissing as e:
        pytest.skip(str(e))


def test_grpc_front_offsets_from_dwarf_match_the_table(grpcbins):
    plain = golang.GoBinary.inspect(str(grpcbins["plain"]))
    stripped = golang.GoBinary.inspect(str(grpcbins["stripped"]))
    assert (plain.offsets_from, stripped.offsets_from) == ("dwarf", "table")
    assert plain.grpc == stripped.grpc == grpcbins["grpc"]
    assert set(plain.entry) == set(golang.HOOKS) - {golang.SERVE}  # no net/http server
    g = golang.grpc_table_offsets(plain.grpc)
    assert (plain.offsets.grpc_stream_id, plain.offsets.grpc_st_conn) == (g.stream_id, g.st_conn)
    assert (stripped.offsets.grpc_stream_id, stripped.offsets.grpc_st_conn) == \
        (g.stream_id, g.st_conn)
    for name in ("pconn_conn", "pconn_tls", "tcpconn_fd", "netfd_sysfd"):
        assert getattr(plain.offsets, name) == getattr(stripped.offsets, name), name
    assert plain.notes == stripped.notes == ()


def test_grpc_version_outside_the_table_is_named_and_needs_a_server(grpcbins, monkeypatch):
    """Stripped, with a grpc-go version the table does not know: the binary
    has no other server, so it is refused with the reason."""
    monkeypatch.setattr(golang, "GRPC_OFFSETS", [])
    with pytest.raises(golang.Unsupported, match=r"grpc-go v1\.33\.3: no DWARF and no known"):
        golang.GoBinary.inspect(str(grpcbins["stripped"]))
    assert golang.GoBinary.inspect(str(grpcbins["plain"])).offsets_from == "dwarf"
