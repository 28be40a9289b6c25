"""Privilege separation end to end (issue 19): the real CLI splits into the
agent (parses, holds nothing, seccomp) and its broker (attaches, holds the
TLS discovery set, no network socket); the agent dying detaches everything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_privileges import _broker_expected, _status, broker_of
from tests.e2e.tracing import TracerRun, free_port, py_server, server
from tests.kernel.conftest import require

N = 23
SERVERS = Path(__file__).parent / "servers"


@pytest.fixture(autouse=True)
def _needs_kernel():
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")



def _sockets(pid: int) -> list[int]:
    """Socket inodes among pid's fds."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            out.append(int(target[8:-1]))
    return out


def _unix_inodes() -> set[int]:
    with open("/proc/net/unix") as f:
        return {int(line.split()[6]) for line in f.readlines()[1:] if len(line.split()) > 6}


def test_agent_holds_nothing_broker_attaches_later_tls_46_server_spans(tmp_path, cert):
    """TLS on (the default): 23 HTTPS requests to node (its own OpenSSL,
    started after the tracer, so hooked through the broker) and 23 HTTP
    requests, all from curl: 46 server and 46 client spans. Meanwhile every
    agent thread has no capability, no_new_privs and the seccomp filter; the
    broker alone holds capabilities, one thread and no network socket."""
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed")
    hport, sport = free_port(), free_port()
    with py_server(hport) as http, \
            TracerRun(tmp_path, "--port", str(hport), "--port", str(sport)) as tr:
        agent = tr.proc.pid
        for st in _status(agent):
            assert (st["CapEff"], st["CapPrm"], st["CapBnd"], st["NoNewPrivs"]) == (0, 0, 0, 1)
        for tid in os.listdir(f"/proc/{agent}/task"):
            with open(f"/proc/{agent}/task/{tid}/status") as f:
                assert "Seccomp:\t2\n" in f.read(), tid
        broker = broker_of(agent)
        want = _broker_expected(tls_discovery=True)
        assert want != 0
        [bst] = _status(broker)  # one thread
        assert (bst["CapEff"], bst["CapPrm"], bst["CapBnd"], bst["NoNewPrivs"]) == \
            (want, want, want, 1)
        socks = _sockets(broker)
        assert len(socks) == 1 and socks[0] in _unix_inodes()  # the channel, nothing else
        with server([node, str(SERVERS / "tls_servers.js"), "https", str(sport), *cert]) as tls:
            time.sleep(3.0)  # the exec is looked at on the next housekeeping tick
            urls = [f"https://127.0.0.1:{sport}/ok/{i}" for i in range(N)]
            subprocess.run(["curl", "-sk", *urls, *["-o", "/dev/null"] * N], check=True,
                           timeout=30)
            urls = [f"http://127.0.0.1:{hport}/ok/{i}" for i in range(N)]
            subprocess.run(["curl", "-s", *urls, *["-o", "/dev/null"] * N], check=True,
                           timeout=30)
            time.sleep(0.5)
        for st in _status(agent):  # still nothing, after the broker attached for us
            assert (st["CapEff"], st["CapPrm"], st["CapBnd"]) == (0, 0, 0)
    assert tr.returncode == 0 and "Traceback" not in tr.stderr, tr.stderr
    want_paths = [f"/ok/{i}" for i in range(N)]
    https = tr.by("server", tls.pid)
    assert [(s["path"], s["status"], s["tls"]) for s in https] == \
        [(p, 200, True) for p in want_paths]
    assert [(s["path"], s["tls"]) for s in tr.by("server", http.pid)] == \
        [(p, False) for p in want_paths]
    assert len(tr.by("server")) == 2 * N and len(tr.by("client")) == 2 * N
    s = tr.summary
    assert os.path.realpath(node) in s["tls_libraries"], s
    b = s["privileges"]["broker"]
    assert b["pid"] == broker and b["libraries_attached"] >= 1, b
    # what the TLS discovery and the Go add-on asked was never refused
    assert b["refusals"] == {}, b
    assert b["gone"] == "" and s["privileges"]["kept"] == [] and s["privileges"]["seccomp"] > 0
    assert not os.path.exists(f"/proc/{broker}")  # reaped by the agent at its exit


def _fdinfo_ids(pid: int, kind: str, key: str) -> set[int]:
    """The ids (prog_id, link_id) of pid's fds of one anon inode kind."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != f"anon_inode:{kind}":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        out.add(int(line.split()[1]))
        except OSError:
            continue
    return out


def _running(pid: int) -> bool:
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


def _bpftool(*args: str) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return json.loads(out or "[]")


def test_agent_killed_broker_detaches_everything_and_exits(tmp_path):
    if not shutil.which("bpftool"):
        pytest.skip("bpftool is not installed")
    tr = TracerRun(tmp_path, "--port", str(free_port()))
    with tr:
        agent = tr.proc.pid
        broker = broker_of(agent)
        progs = _fdinfo_ids(broker, "bpf-prog", "prog_id")
        links = _fdinfo_ids(broker, "bpf_link", "link_id")
        assert progs and links
        assert progs <= {p["id"] for p in _bpftool("prog", "show")}
        os.kill(agent, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while _running(broker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(broker)
        err = tr.proc.stderr.read()  # the broker wrote its line before the agent is reaped
        tr.proc.wait(timeout=10)
        tr.proc = None  # nothing left to stop
    assert f"tracer: the agent (pid {agent}) was killed by SIGKILL; the broker detached " \
        "everything" in err, err
    deadline = time.monotonic() + 10  # a prog array's entries are freed by a kernel worker
    while progs & {p["id"] for p in _bpftool("prog", "show")} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not progs & {p["id"] for p in _bpftool("prog", "show")}
    assert not links & {k["id"] for k in _bpftool("link", "show")}
    assert not progs & {p.get("prog_id") for p in _bpftool("perf", "show")}
