"""End to end: a stripped program whose only names and DWARF are in a
separate debug file (tests/cprogs/work.c built "split": main -> caller(i) ->
work(i, 3*i, "work-i"), 23 calls), traced by `python -m tracer funcs
BINARY:work --stack` with the debug file found three ways:

- by build-id under a debug root (--debug-dir);
- by .gnu_debuglink, beside the binary, the debug root empty;
- from a real debuginfod server (Debian's `debuginfod`, indexing a directory
  holding only the debug file), the debug root empty.

Each gives exactly 23 calls with the DWARF argument names and values, and
stacks named work -> caller -> main. And `run --span-stacks` names a split
client's frames (TRACER_DEBUG_DIRS) as it would an unstripped one's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cprogs import build as cbuild
from tests.e2e.test_funcs import run_calls
from tests.e2e.tracing import TracerRun, free_port, held, py_server
from tests.kernel.conftest import require
from tracer.symbols import ElfSymbols

N = 23
SERVER_START_S = 60  # the server scans its directory before it answers

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    missing = cbuild.missing_tools("split")
    if missing:
        pytest.skip(f"cannot build the split target: missing {', '.join(missing)}")
    out = tmp_path_factory.mktemp("cprogs")
    exe = cbuild.build("split", out, source="work.c")
    return exe, cbuild.debug_file_of(exe)


def _build_id(path) -> str:
    bid = ElfSymbols.open(str(path)).build_id
    assert bid, path
    return bid


@contextlib.contextmanager
def debuginfod(index: Path, state: Path, build_id: str):
    """`debuginfod -F` on index (ELF/DWARF files in a directory), ready once
    it serves build_id; always stopped."""
    exe = shutil.which("debuginfod")
    if exe is None:
        pytest.fail("debuginfod is not installed: apt-get install debuginfod (in APT_PKGS)")
    port = free_port()
    log = open(state / "debuginfod.log", "w")  # noqa: SIM115 - closed below
    p = subprocess.Popen([exe, "-F", "-p", str(port), "-d", str(state / "db.sqlite"),
                          str(index)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/buildid/{build_id}/debuginfo",
                                            timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert p.poll() is None, (state / "debuginfod.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "debuginfod never served the debug file"
            time.sleep(0.2)
        yield url
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def _check(records, summary, exe: Path, origin: str, how: str, stderr: str):
    calls = [r for r in records if r["function"] == "work"]
    assert len(calls) == len(records) == N, stderr
    for i, r in enumerate(calls):
        assert r["target"] == f"{exe}:work"
        assert r["args"] == {"id": i, "weight": 3 * i, "label": f"work-{i}"}, r
        assert r["retval"] == i * 1000 + 3 * i
        syms = [f["symbol"] for f in r["stack"]]
        assert syms[:3] == ["work", "caller", "main"], (r["stack_method"], r["stack"])
        assert all(f["module"] == str(exe) for f in r["stack"][:3])
    assert summary["calls_recorded"] == N and summary["events_dropped"] == 0
    assert summary["stacks_missing"] == 0
    src = summary["symbol_sources"]
    assert set(src) == {"binary", "debug_file", "debuginfod", "none"}
    assert src[origin] >= 3, src  # work, caller, main (and libc's, from its own file)
    other = "debuginfod" if origin == "debug_file" else "debug_file"
    assert src[other] == 0, src  # the debug root is the test's: libc's is not there
    files = summary["debug_files"]
    assert files[f"found_{how}"] == 1, files
    assert files["build_id_mismatch"] == files["crc_mismatch"] == files["corrupt"] == 0
    assert "Traceback" not in stderr


@pytest.mark.parametrize("how", ["build_id", "debuglink", "debuginfod"])
def test_stripped_binary_named_from_its_debug_file(how, split, tmp_path, monkeypatch):
    require("uprobe", "ringbuf")
    built, debug = split
    (tmp_path / "bin").mkdir()
    exe = tmp_path / "bin" / "work"
    shutil.copy2(built, exe)
    root = tmp_path / "debug-root"
    root.mkdir()
    bid = _build_id(exe)
    monkeypatch.delenv("DEBUGINFOD_URLS", raising=False)
    if how == "build_id":
        (root / ".build-id" / bid[:2]).mkdir(parents=True)
        shutil.copy2(debug, root / ".build-id" / bid[:2] / f"{bid[2:]}.debug")
    elif how == "debuglink":
        shutil.copy2(debug, exe.parent / cbuild.debuglink_name("work.c"))
    args = [f"{exe}:work", "--stack", "--debug-dir", str(root)]
    if how != "debuginfod":
        records, summary, _, err = run_calls(exe, args, tmp_path)
        _check(records, summary, exe, "debug_file", how, err)
        return
    index = tmp_path / "index"
    index.mkdir()
    shutil.copy2(debug, index / "work.debug")
    monkeypatch.setenv("DEBUGINFOD_CACHE_PATH", str(tmp_path / "cache"))
    with debuginfod(index, tmp_path, bid) as url:
        monkeypatch.setenv("DEBUGINFOD_URLS", url)
        records, summary, _, err = run_calls(exe, args, tmp_path)
    _check(records, summary, exe, "debuginfod", how, err)
    assert summary["debug_files"]["debuginfod_fetched"] == 1
    assert (tmp_path / "cache" / bid / "debuginfo").read_bytes() == debug.read_bytes()


def test_span_stacks_named_from_a_debug_file(tmp_path, monkeypatch):
    """`run --span-stacks`: the split client's frames (frame pointers, the
    kernel's walk) get their names from the build-id debug file."""
    require("btf", "ringbuf", "tracepoint_syscalls")
    try:
        client = cbuild.build("split-fp", tmp_path / "cprogs", source="span_client.c")
    except cbuild.BuildError as e:
        pytest.skip(str(e))
    bid = _build_id(client)
    # readable by all, as /usr/lib/debug is: the agent runs as nobody once
    # split from the broker, which opens only the files mapped
    root = Path(tempfile.mkdtemp(prefix="tracer-debug-root-"))
    try:
        os.chmod(root, 0o755)
        (root / ".build-id" / bid[:2]).mkdir(parents=True, mode=0o755)
        shutil.copy2(cbuild.debug_file_of(client),
                     root / ".build-id" / bid[:2] / f"{bid[2:]}.debug")
        monkeypatch.setenv("TRACER_DEBUG_DIRS", str(root))
        monkeypatch.delenv("DEBUGINFOD_URLS", raising=False)
        port = free_port()
        with py_server(port, 1), TracerRun(tmp_path, "--port", str(port), "--span-stacks") as tr:
            with held([str(client), str(port), str(N), "hold"]):  # maps readable until stop
                tr.stop()
    finally:
        shutil.rmtree(root)
    spans = [s for s in tr.spans if s["kind"] == "client"]
    assert len(spans) == N, tr.stderr
    for s in spans:
        syms = [f["symbol"] for f in s["stack"]]
        assert "do_request" in syms and "main" in syms, s["stack"]
        assert syms.index("do_request") < syms.index("main")
        assert s["stack"][syms.index("do_request")]["module"] == str(client)
