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
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.test_privileges import _broker_expected, _status, broker_of, nobody
from tests.e2e.tracing import TracerRun, free_port, py_server, server, wait_uprobes_on
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
    broker alone holds capabilities, one thread and no network socket. The
    agent runs as the default user (nobody: uid and gid 65534 here), the
    broker stays root; spans and summary reach root's 0700 pytest directory
    (opened before the drop)."""
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed")
    hport, sport = free_port(), free_port()
    with py_server(hport) as http, \
            TracerRun(tmp_path, "--port", str(hport), "--port", str(sport)) as tr:
        agent = tr.proc.pid
        uid, gid = nobody()
        assert uid != 0 and gid != 0
        for st in _status(agent):
            assert (st["CapEff"], st["CapPrm"], st["CapBnd"], st["NoNewPrivs"]) == (0, 0, 0, 1)
            assert (st["Uid"], st["Gid"]) == ([uid] * 4, [gid] * 4)
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
            wait_uprobes_on(tr.proc.pid, node)
            urls = [f"https://127.0.0.1:{sport}/ok/{i}" for i in range(N)]
            subprocess.run(["curl", "-sk", *urls, *["-o", "/dev/null"] * N], check=True,
                           timeout=30)
            urls = [f"http://127.0.0.1:{hport}/ok/{i}" for i in range(N)]
            subprocess.run(["curl", "-s", *urls, *["-o", "/dev/null"] * N], check=True,
                           timeout=30)
            time.sleep(0.5)
        for st in _status(agent):  # still nothing, after the broker attached for us
            assert (st["CapEff"], st["CapPrm"], st["CapBnd"]) == (0, 0, 0)
            assert (st["Uid"], st["Gid"]) == ([uid] * 4, [gid] * 4)
        assert _status(broker)[0]["Uid"] == [0] * 4
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
    assert s["privileges"]["user"] == "nobody" and s["privileges"]["warnings"] == 0
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


def _jaeger_services(path: Path) -> dict[int, str]:
    """pid -> serviceName in a jaeger-json file."""
    out = {}
    for trace in json.loads(path.read_text())["data"]:
        for p in trace["processes"].values():
            tags = {t["key"]: t["value"] for t in p["tags"]}
            out[int(tags["process.pid"])] = p["serviceName"]
    return out


def test_exe_names_and_jaeger_file_as_nobody(tmp_path):
    """--service-name EXE=NAME names a root process by its executable, read
    by the broker (the agent, nobody with no capability, may not read root's
    /proc/PID/exe); the jaeger-json file is rewritten in a directory nobody
    can write."""
    import sys

    exe = os.path.basename(os.path.realpath(sys.executable))
    out = Path(tempfile.mkdtemp(prefix="httptrace-", dir="/tmp"))
    out.chmod(0o777)
    try:
        port = free_port()
        jaeger = out / "traces.json"
        # all spans go out at stop, after the broker dropped its links: it
        # still names them
        with py_server(port) as srv, \
                TracerRun(tmp_path, "--port", str(port), "--no-tls", "--no-go",
                          "--service-name", f"{exe}=checkout",
                          "--export", f"jaeger-json:{jaeger}") as tr:
            with open(f"/proc/{srv.pid}/comm") as f:
                assert f.read().strip() != exe  # the name comes from the executable only
            for st in _status(tr.proc.pid):
                assert st["Uid"] == [nobody()[0]] * 4 and st["CapEff"] == 0
            subprocess.run(["curl", "-s", *[f"http://127.0.0.1:{port}/ok/{i}" for i in range(N)],
                            *["-o", "/dev/null"] * N], check=True, timeout=30)
        assert tr.returncode == 0 and "Traceback" not in tr.stderr, tr.stderr
        assert len(tr.by("server", srv.pid)) == N
        assert _jaeger_services(jaeger)[srv.pid] == "checkout"
        assert tr.summary["privileges"]["broker"]["refused"] == 0
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_jaeger_file_where_nobody_cannot_write(tmp_path):
    """jaeger-json rewrites its file through FILE.tmp: in root's 0700 pytest
    directory the default user could not, so the agent stays root and says so
    in one counted line; an explicit --user that cannot is refused at start."""
    import sys

    port = free_port()
    jaeger = tmp_path / "traces.json"
    with py_server(port) as srv, \
            TracerRun(tmp_path, "--port", str(port), "--no-tls", "--no-go",
                      "--export", f"jaeger-json:{jaeger}") as tr:
        assert _status(tr.proc.pid)[0]["Uid"] == [0] * 4
        subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/ok/0", "-o", "/dev/null"],
                       check=True, timeout=30)
    assert tr.summary["privileges"]["warnings"] == 1 and tr.summary["privileges"]["user"] == ""
    assert srv.pid in _jaeger_services(jaeger)
    p = subprocess.run([sys.executable, "-m", "tracer", "run", "--port", "1", "--no-tls",
                        "--no-go", "--export", f"jaeger-json:{jaeger}", "--duration", "1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert f"tracer: privileges: the agent stays uid 0: nobody cannot write {tmp_path} " \
        "(--export jaeger-json): pass --user with a user who can, or choose another " \
        "directory\n" in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-m", "tracer", "run", "--user", "nobody", "--export",
                        f"jaeger-json:{jaeger}", "--duration", "1"],
                       capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stderr.strip().splitlines()) == (2, [
        f"tracer: --user nobody: cannot write {tmp_path} (jaeger-json rewrites its file there "
        "while tracing): choose a directory that user can write, or another --user"])


def test_sighup_reload_reads_a_root_only_config_through_the_broker(tmp_path):
    """The agent (nobody) may not read a 0600 config under root's 0700
    directory: on SIGHUP the broker opens the file named at start and passes
    the fd; the new scope applies."""
    port_a, port_b = free_port(), free_port()
    cfg = tmp_path / "tracer.toml"
    cfg.write_text(f"[scope]\nports = [{port_a}]\n")
    cfg.chmod(0o600)
    with py_server(port_b) as srv_b, TracerRun(tmp_path, "--config", str(cfg)) as tr:
        assert _status(tr.proc.pid)[0]["Uid"] == [nobody()[0]] * 4
        cfg.write_text(f"[scope]\nports = [{port_b}]\n")
        tr.proc.send_signal(signal.SIGHUP)
        line = tr.proc.stderr.readline()
        while "config reloaded" not in line and "reload failed" not in line and line:
            line = tr.proc.stderr.readline()
        assert line.startswith(f"tracer: config reloaded from {cfg}"), line
        subprocess.run(["curl", "-s", *[f"http://127.0.0.1:{port_b}/ok/{i}" for i in range(N)],
                        *["-o", "/dev/null"] * N], check=True, timeout=30)
    assert len(tr.by("server", srv_b.pid)) == N
    assert (tr.summary["config_reloads"], tr.summary["config_reload_errors"]) == (1, 0)
