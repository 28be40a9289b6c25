"""tracer/pyasync.py without root: the mirror of pyasync.h, finding the
interpreter and its symbols (in the file or a separate debug file), and the
join of call records to server requests on synthetic events."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys

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
from tracer import loader, pyasync
from tracer.conn import ConnectionTable
from tracer.stats import Stats

# -- the mirror -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def btf():
    return btf_types("pyasync")


@pytest.mark.parametrize("cname", sorted(pyasync.STRUCTS))
def test_struct_layout_matches_btf(btf, cname):
    assert_struct_matches(btf, cname, pyasync.STRUCTS[cname])


@pytest.mark.parametrize("ename", sorted(pyasync.ENUMS))
def test_enum_values_match_btf(btf, ename):
    t = btf[("ENUM", ename)]
    assert {v["name"]: v["val"] for v in t["values"]} == pyasync.ENUMS[ename]


def test_constants_match_header():
    text = (loader.BPF_DIR / "pyasync.h").read_text()
    for name in ("PA_MAX_NEST", "PA_MAX_DEPTH", "PA_MAX_MODULES"):
        assert re.search(rf"^#define {name} {getattr(pyasync, name)}\b", text, re.M), name
    assert pyasync._CALL.size == ctypes.sizeof(pyasync.PaCallC)


# -- the interpreter --------------------------------------------------------------------
PYENV = "/root/.pyenv/versions/3.11.7"
PYENV_LIB = f"{PYENV}/lib/libpython3.11.so.1.0"
PYENV_MOD = f"{PYENV}/lib/python3.11/lib-dynload/_asyncio.cpython-311-x86_64-linux-gnu.so"


def _maps(*paths: str) -> list[str]:
    return [f"7f00{i:08x}-7f01{i:08x} r-xp 00001000 08:01 {100 + i} {p}\n"
            for i, p in enumerate(paths)] + ["7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]\n"]


def test_interpreter_from_the_mapped_libpython_and_module():
    interp = pyasync.interpreter_of(_maps(f"{PYENV}/bin/python3.11", PYENV_LIB, PYENV_MOD),
                                    f"{PYENV}/bin/python3.11")
    assert interp == pyasync.Interpreter((3, 11), PYENV_MOD, PYENV_LIB)


def test_interpreter_found_at_exec_looks_in_lib_dynload(tmp_path):
    """No _asyncio mapped yet (found at exec), libpython linked into the
    executable (Debian's python3.11): the module the interpreter would load,
    seen through the process's root."""
    dyn = tmp_path / "usr/lib/python3.11/lib-dynload"
    dyn.mkdir(parents=True)
    (dyn / "_asyncio.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    interp = pyasync.interpreter_of(_maps("/usr/bin/python3.11"), "/usr/bin/python3.11",
                                    root=str(tmp_path))
    assert interp.module == f"{tmp_path}/usr/lib/python3.11/lib-dynload/" \
                            "_asyncio.cpython-311-x86_64-linux-gnu.so"
    assert interp.runtime == f"{tmp_path}/usr/bin/python3.11"
    # built in (no such file): the executable carries _asyncio too
    interp = pyasync.interpreter_of(_maps("/opt/py/bin/python3.12"), "/opt/py/bin/python3.12",
                                    root=str(tmp_path))
    assert interp.module == interp.runtime == f"{tmp_path}/opt/py/bin/python3.12"
    assert interp.version == (3, 12)


def test_other_processes_are_not_python():
    with pytest.raises(pyasync.NotPython):
        pyasync.interpreter_of(_maps("/usr/sbin/nginx", "/lib/libc.so.6"), "/usr/sbin/nginx")


@pytest.fixture(scope="module")
def pyenv():
    if not (os.path.exists(PYENV_MOD) and os.path.exists(PYENV_LIB)):
        pytest.skip(f"no CPython 3.11 with shared libpython at {PYENV}")
    return pyasync.Interpreter((3, 11), PYENV_MOD, PYENV_LIB)


def test_symbols_of_the_installed_interpreter(pyenv):
    mod, rt = pyasync.inspect(pyenv)
    assert set(mod.offsets) == set(pyasync.MODULE_HOOKS) and mod.source == "symtab"
    assert set(rt.offsets) == {"context_run"}
    # file offsets inside the executable segment (here the vaddrs: a shared
    # object's first segment maps file offset 0 at vaddr 0)
    from tracer.symbols.rawelf import PF_X, RawElf, file_reader
    with open(PYENV_MOD, "rb") as f:
        text = [s for s in RawElf(file_reader(f.fileno())).loads if s.flags & PF_X]
    for name, off in mod.offsets.items():
        assert any(s.offset <= off < s.offset + s.filesz for s in text), name
        assert mod.vaddrs[name] - off in {s.vaddr - s.offset for s in text}, name


def test_module_offsets_match_dwarf(pyenv):
    """The table's offsets into _asyncio's own structures, against the
    build's DWARF (the others are CPython's public object layouts)."""
    elftools = pytest.importorskip("elftools.elf.elffile")
    with open(PYENV_MOD, "rb") as f:
        elf = elftools.ELFFile(f)
        if not elf.has_dwarf_info():
            pytest.skip("the module has no DWARF")
        want = {b"TaskStepMethWrapper": (b"sw_task", "stepwrapper_task"),
                b"FutureObj": (b"fut_callback0", "fut_callback0")}
        found = {}
        for cu in elf.get_dwarf_info().iter_CUs():
            for die in cu.iter_DIEs():
                name = die.attributes.get("DW_AT_name")
                if die.tag == "DW_TAG_typedef" and name and name.value in want:
                    struct = die.get_DIE_from_attribute("DW_AT_type")
                    members = {m.attributes["DW_AT_name"].value:
                               m.attributes["DW_AT_data_member_location"].value
                               for m in struct.iter_children()}
                    member, key = want[name.value]
                    found[key] = members[member]
    table = pyasync.OFFSETS[(3, 11)]
    assert found == {k: table[k] for k in ("stepwrapper_task", "fut_callback0")}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} (binutils) not installed")
    return path


def test_stripped_module_is_named_and_its_debug_file_is_used(pyenv, tmp_path):
    """A distribution's stripped _asyncio (Debian's): refused by name; with
    its debug file beside it (.gnu_debuglink, as python3.11-dbg installs
    under /usr/lib/debug by build-id), the offsets are the unstripped ones."""
    objcopy = _tool("objcopy")
    stripped = tmp_path / "_asyncio.cpython-311-x86_64-linux-gnu.so"
    debug = tmp_path / "_asyncio.debug"
    subprocess.run([objcopy, "--only-keep-debug", PYENV_MOD, str(debug)], check=True)
    subprocess.run([objcopy, "--strip-all", PYENV_MOD, str(stripped)], check=True)
    interp = pyasync.Interpreter((3, 11), str(stripped), PYENV_LIB)
    with pytest.raises(pyasync.Unsupported, match=r"CPython 3\.11: no symbol for "
                                                  r"TaskStepMethWrapper_call, "
                                                  r".*install its debug symbols"):
        pyasync.inspect(interp)
    subprocess.run([objcopy, f"--add-gnu-debuglink={debug}", str(stripped)], check=True,
                   cwd=tmp_path)
    from tracer.symbols import debugfile
    debugfile.clear_cache()
    mod, _ = pyasync.inspect(interp)
    want, _ = pyasync.inspect(pyasync.Interpreter((3, 11), PYENV_MOD, PYENV_LIB))
    assert mod.offsets == want.offsets and mod.source == str(debug)


def test_other_versions_are_named_in_one_line():
    with pytest.raises(pyasync.Unsupported, match=r"^CPython 3\.12: only 3\.11 is supported$"):
        pyasync.inspect(pyasync.Interpreter((3, 12), "/nonexistent", "/nonexistent"))


def test_a_refused_interpreter_is_said_once(tmp_path, caplog):
    class Obj:
        attached: list = []

    probes = pyasync.PyProbes(Obj())
    mod = tmp_path / "_asyncio.cpython-311-x86_64-linux-gnu.so"
    mod.write_bytes(b"not an ELF")
    interp = pyasync.Interpreter((3, 11), str(mod), sys.executable)
    assert not probes.consider(interp) and not probes.consider(interp)
    assert probes.unsupported == {str(mod): "unreadable: not an ELF file"}
    assert len([r for r in caplog.records if "asyncio:" in r.getMessage()]) == 1


# -- the join ---------------------------------------------------------------------------
FRONT, LOOP = 500, 501


class AsyncFront:
    """An asyncio front (pid 500): one thread (501) runs every request;
    server connections 11-13, pooled client connections 21-22."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.out: list = []
        self.table = ConnectionTable(self.out.append, Stats())
        self.srv = {i: Conversation(self.clock, 10 + i, ROLE_SERVER, pid=FRONT, tid=LOOP,
                                    comm="front", laddr="10.0.0.1", lport=8080,
                                    raddr="10.0.0.9", rport=40000 + i) for i in (1, 2, 3)}
        self.cli = {c: Conversation(self.clock, c, ROLE_CLIENT, pid=FRONT, tid=LOOP,
                                    comm="front", laddr="10.0.0.1", lport=50000 + c,
                                    raddr="10.0.0.2", rport=8081) for c in (21, 22)}
        for conv in (*self.srv.values(), *self.cli.values()):
            feed(self.table, [conv.open()])

    def read_request(self, i: int) -> int:
        feed(self.table, self.srv[i].request(http_request("GET", f"/front/{i}")))
        return self.clock.t  # the pyasync read exit: after sock.bpf.o's

    def call(self, conn: int, i: int, index: pyasync.CallIndex | None, serve_ts: int) -> None:
        c = self.cli[conn]
        if index is not None:  # written at the write's entry, after sock.bpf.o's
            index.add(self.clock.t + 100, conn, 10 + i, serve_ts, FRONT)
        feed(self.table, c.request(http_request("GET", f"/ok/{i}")))
        feed(self.table, c.response(http_response(200, body=b"ok")))

    def respond(self, i: int) -> None:
        feed(self.table, self.srv[i].response(http_response(200, body=b"front")))

    def spans(self) -> dict[str, object]:
        self.table.correlator.close()
        return {s.path: s for s in self.out}


def _run(hooked: bool):
    """Three requests in flight on the loop's thread; calls in another order."""
    front = AsyncFront()
    addon = pyasync.PyAsyncio()
    addon.index = pyasync.CallIndex(front.table)
    if hooked:
        front.table.correlator.runtime_parents.append(addon.parent)
    index = addon.index if hooked else None
    serve = {i: front.read_request(i) for i in (1, 2, 3)}
    front.call(21, 2, index, serve[2])
    front.call(22, 3, index, serve[3])
    front.respond(2)
    front.call(21, 1, index, serve[1])
    front.respond(1)
    front.respond(3)
    return front.spans(), addon.index


def test_task_links_are_exact_where_the_thread_is_ambiguous():
    spans, index = _run(hooked=True)
    for i in (1, 2, 3):
        call, req = spans[f"/ok/{i}"], spans[f"/front/{i}"]
        assert (call.parent_span_id, call.trace_id) == (req.span_id, req.trace_id), i
        assert (call.correlation_source, call.correlation_confidence) == ("thread", 1.0)
    assert (index.links, index.no_call, index.no_server, index.records) == (3, 0, 0, 3)


def test_without_the_hook_no_call_is_linked():
    """The regression the add-on fixes: one thread, several requests in
    flight: the thread link is ambiguous and not made."""
    spans, _ = _run(hooked=False)
    assert [spans[f"/ok/{i}"].parent_span_id for i in (1, 2, 3)] == [None] * 3


def test_no_parent_here_asks_the_next_hook_and_a_finished_request_is_no_parent():
    front = AsyncFront()
    addon = pyasync.PyAsyncio()
    addon.index = index = pyasync.CallIndex(front.table)
    asked = []
    # every runtime hook is asked in turn until one names a parent
    front.table.correlator.runtime_parents.append(addon.parent)
    front.table.correlator.runtime_parents.append(
        lambda conn, pid, ts: asked.append(conn.conn_id))
    serve1 = front.read_request(1)
    front.call(21, 1, index, serve1)
    front.respond(1)
    # a task that served request 1 calls after it is over: no parent, counted
    front.call(21, 1, index, serve1)
    # a call written by no serving task: no record; both go on to the next hook
    front.call(22, 2, None, 0)
    front.spans()
    assert asked == [21, 22]
    assert (index.links, index.no_server, index.no_call) == (1, 1, 1)
    calls = [s for s in front.out if s.kind == "client"]
    assert [s.parent_span_id is not None for s in calls] == [True, False, False]


def test_records_outside_the_write_window_are_not_taken():
    index = pyasync.CallIndex(table=None)
    index.add(1000, 7, 11, 900)
    index.add(5000, 7, 12, 4900)
    index.add(5010, 7, 12, 4900)  # the same head's second write
    index.add(9000, 7, 13, 8900)
    # a write at 2000..2500 had no record: the next one (5000) is a later write's
    assert index.find(7, 2000, 2500) is None
    assert index.find(7, 5000 - pyasync.ENTRY_SKEW_NS, 5100) == (5000, 12, 4900)
    assert list(index.calls[7]) == [(9000, 13, 8900)]
    index.expire(9000 + pyasync.RECORD_KEEP_NS)
    assert list(index.calls) == [7]
    index.expire(9001 + pyasync.RECORD_KEEP_NS)
    assert index.calls == {}
    for i in range(pyasync.CALLS_PER_CONN + 3):
        index.add(i, 8, 11, 0)
    assert len(index.calls[8]) == pyasync.CALLS_PER_CONN  # the oldest dropped


def test_records_decode_from_ring_bytes():
    index = pyasync.CallIndex(table=None)
    rec = pyasync.PaCallC(pyasync.PA_REC_CALL, 1, 0, FRONT, LOOP, 0, 5000, 21, 11, 4000,
                          0x7F0012345678)
    raw = bytes(rec)
    index.on_record(memoryview(b"\0" * 8 + raw), 8, len(raw))
    index.on_record(memoryview(raw[:-1]), 0, len(raw) - 1)  # short: ignored
    assert index.find(21, 5000, 6000) == (5000, 11, 4000)
    assert index.records == 1 and index.pids == {FRONT}


def test_idle_summary_has_the_running_keys():
    idle = pyasync.PyAsyncio.idle()
    assert set(idle) == {
        "pyasync_interpreters", "pyasync_unsupported", "pyasync_unavailable", "pyasync_links",
        "pyasync_link_misses", "pyasync_records", "pyasync_processes",
        "pyasync_unreadable_processes", "pyasync_exec_discovery", "pyasync_kernel",
        "pyasync_probe_ns"}
    assert set(idle["pyasync_kernel"]) == set(pyasync.COUNTERS)
