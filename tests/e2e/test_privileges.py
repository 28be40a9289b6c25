"""Least privilege end to end: the real tracer CLI drops its capabilities after
attach, and spans still flow (count-exact: 23 requests, 23 server + 23
client spans, the summary written).

The capability sets are read from /proc/<tracer>/status (every thread) right
after the ready line. The expected set comes from tracer/privileges.py, with
what this kernel needs found by trying here (probe_runtime_needs), so the test
checks the documented rule, not a copy of it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from tests.e2e.tracing import TracerRun, free_port, held, py_server, server, wait_uprobes_on
from tests.kernel.conftest import require
from tracer import privileges, tls

N = 23
SERVERS = Path(__file__).parent / "servers"


@pytest.fixture(autouse=True)
def _needs_kernel():
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")


def _libssl() -> str:
    for path in tls.SYSTEM_LIBS:
        if os.path.exists(path):
            return path
    pytest.skip("no system libssl: TLS discovery is off, nothing to keep for it")


def _expected(tls_discovery: bool) -> int:
    """The agent's set: TLS discovery is the broker's (tracer/broker.py), so
    the agent keeps nothing for it."""
    needs = privileges.probe_runtime_needs(library=_libssl())
    return privileges.mask(privileges.runtime_caps(tls_discovery=False, kernel=needs))


def _broker_expected(tls_discovery: bool) -> int:
    needs = privileges.probe_runtime_needs(library=_libssl())
    return privileges.mask(privileges.broker_caps(tls_discovery=tls_discovery, kernel=needs))


def broker_of(agent: int) -> int:
    """The broker: the agent's one child process."""
    with open(f"/proc/{agent}/task/{agent}/children") as f:
        kids = [int(x) for x in f.read().split()]
    assert len(kids) == 1, kids
    return kids[0]


def _status(pid: int) -> list[dict]:
    """parse_status of every thread of pid."""
    return [privileges.read_status(f"{pid}/task/{tid}") for tid in os.listdir(f"/proc/{pid}/task")]


def nobody() -> tuple[int, int]:
    """(uid, gid) of the agent's default user (started as root)."""
    try:
        pw = pwd.getpwnam(privileges.DEFAULT_USER)
    except KeyError:
        pytest.skip(f"no user '{privileges.DEFAULT_USER}' on this machine")
    return pw.pw_uid, pw.pw_gid


def _assert_dropped(pid: int, want: int, uid: int | None = None) -> None:
    """Every thread of pid: the capability sets, no_new_privs, and the uid
    (default: the agent's default user; the broker stays root: uid=0)."""
    uid = nobody()[0] if uid is None else uid
    for st in _status(pid):
        assert (st["CapEff"], st["CapPrm"], st["CapBnd"]) == (want, want, want), \
            (privileges.names(st["CapEff"]), privileges.names(want))
        assert st["CapInh"] == st["CapAmb"] == 0
        assert st["NoNewPrivs"] == 1
        assert st["Uid"] == [uid] * 4


def _requests_23(port: int) -> None:
    with requests.Session() as s:
        for i in range(N):
            assert s.get(f"http://127.0.0.1:{port}/ok/{i}").status_code == 200


def _assert_23(tr: TracerRun, srv_pid: int, kept: int) -> None:
    server_spans = tr.by("server", srv_pid)
    client_spans = tr.by("client", os.getpid())
    want = [f"/ok/{i}" for i in range(N)]
    assert [s["path"] for s in server_spans] == want
    assert [s["path"] for s in client_spans] == want
    assert {s["status"] for s in server_spans + client_spans} == {200}
    assert tr.returncode == 0, tr.stderr
    assert tr.summary["spans_emitted"] == 2 * N
    assert tr.summary["events_dropped"] == 0
    p = tr.summary["privileges"]
    assert p["dropped"] is True and p["warnings"] == 0 and p["threads_with_caps"] == 0, p
    assert p["kept"] == sorted(privileges.names(kept))
    assert "Traceback" not in tr.stderr


def test_default_drop_leaves_the_tls_discovery_set_to_the_broker_and_spans_flow(tmp_path):
    port = free_port()
    want = _expected(tls_discovery=True)
    assert want == 0
    with py_server(port) as srv, TracerRun(tmp_path, "--port", str(port)) as tr:
        _assert_dropped(tr.proc.pid, want)
        broker = broker_of(tr.proc.pid)
        _assert_dropped(broker, _broker_expected(tls_discovery=True), uid=0)
        _requests_23(port)
    _assert_23(tr, srv.pid, want)
    b = tr.summary["privileges"]["broker"]
    assert (b["pid"], b["kept"]) == (broker, sorted(privileges.names(_broker_expected(True))))


def test_no_tls_no_go_keeps_no_capability_and_spans_flow(tmp_path):
    port = free_port()
    with py_server(port) as srv, TracerRun(tmp_path, "--port", str(port), "--no-tls",
                                           "--no-go") as tr:
        _assert_dropped(tr.proc.pid, 0)
        # nothing to attach later: it keeps nothing
        _assert_dropped(broker_of(tr.proc.pid), 0, uid=0)
        _requests_23(port)
    _assert_23(tr, srv.pid, 0)


def test_user_nobody_with_metrics_and_no_tls(tmp_path):
    """--user: the uid changes in every thread; the metrics server (its thread
    predates the drop) still answers; the summary is written to a directory
    nobody cannot write (opened before the drop); no capability is left to
    read an interpreter under /root at exit."""
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    port, mport = free_port(), free_port()
    with py_server(port) as srv, TracerRun(tmp_path, "--port", str(port), "--no-tls",
                                           "--user", "nobody",
                                           "--metrics", f"127.0.0.1:{mport}") as tr:
        _assert_dropped(tr.proc.pid, 0, uid=nobody)
        _requests_23(port)
        deadline = time.monotonic() + 20  # the agent parses at its own pace
        while True:
            body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                          timeout=10).read()
            if b"httptrace_requests_total" in body or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert b"httptrace_requests_total" in body
        _assert_dropped(tr.proc.pid, 0, uid=nobody)  # the scrape thread too
    _assert_23(tr, srv.pid, 0)
    assert tr.summary["privileges"]["user"] == "nobody"


def test_exporter_threads_take_the_dropped_set(tmp_path):
    """OTLP/gRPC starts grpc's own threads with its channel; created on the
    first export (the sender thread, after the drop), they hold the kept set
    only, like the metrics thread; 46 spans reach the receiver."""
    from harness.receivers import GrpcReceiver

    port, mport = free_port(), free_port()
    want = _expected(tls_discovery=True)
    with GrpcReceiver() as rx, py_server(port) as srv, \
            TracerRun(tmp_path, "--port", str(port), "--metrics", f"127.0.0.1:{mport}",
                      "--export", f"otlp-grpc://127.0.0.1:{rx.port}") as tr:
        _requests_23(port)
        assert len(rx.wait_spans(2 * N)) == 2 * N
        urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read()
        comms = {open(f"/proc/{tr.proc.pid}/task/{t}/comm").read().strip()
                 for t in os.listdir(f"/proc/{tr.proc.pid}/task")}
        assert "grpc_global_tim" in comms  # grpc's threads exist, and are checked here
        _assert_dropped(tr.proc.pid, want)
    _assert_23(tr, srv.pid, want)
    assert tr.summary["spans_exported"] == 2 * N


def test_span_stacks_symbolized_after_the_drop_as_nobody(tmp_path):
    """--span-stacks symbolizes while tracing: /proc/<pid>/maps of root
    processes and a client binary under root's 0700 pytest directory, opened
    by the broker (which keeps CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH for it)
    and read by the agent as nobody with no capability."""
    from tests.cprogs import build

    try:
        client = build.build("fp", tmp_path / "cprogs", source="span_client.c")
    except build.BuildError as e:
        pytest.skip(str(e))
    port = free_port()
    broker_want = privileges.mask(privileges.broker_caps(tls_discovery=False, span_stacks=True))
    assert privileges.names(broker_want) == ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]
    with py_server(port, 1) as srv, TracerRun(tmp_path, "--port", str(port), "--no-tls",
                                              "--no-go", "--span-stacks") as tr:
        _assert_dropped(tr.proc.pid, 0)  # nobody, by default
        _assert_dropped(broker_of(tr.proc.pid), broker_want, uid=0)
        with held([str(client), str(port), str(N), "hold"]):  # maps readable until stop
            tr.stop()
    clients = [s for s in tr.spans if s["kind"] == "client"]
    assert len(clients) == len(tr.by("server", srv.pid)) == N
    for s in clients:
        syms = [f["symbol"] for f in s["stack"]]
        assert "do_request" in syms and "main" in syms, s["stack"]
    assert tr.summary["spans_with_stack"] == 2 * N
    assert tr.summary["privileges"]["broker"]["refused"] == 0
    assert tr.returncode == 0 and "Traceback" not in tr.stderr


def test_no_drop_privileges_keeps_everything(tmp_path):
    port = free_port()
    before = privileges.read_status()
    with py_server(port) as srv, TracerRun(tmp_path, "--port", str(port),
                                           "--no-drop-privileges") as tr:
        st = privileges.read_status(tr.proc.pid)
        assert (st["CapEff"], st["NoNewPrivs"]) == (before["CapEff"], before["NoNewPrivs"])
        assert st["Uid"] == before["Uid"]  # no default user either
        _requests_23(port)
    assert len(tr.by("server", srv.pid)) == N
    assert tr.summary["privileges"] == {"dropped": False}



def test_tls_library_found_after_the_drop_as_nobody(tmp_path, cert):
    """The kept set is enough for what discovery does after start: node (its
    own OpenSSL) exec'd after the drop is read through /proc and gets uprobes,
    while the tracer runs as nobody."""
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed")
    port = free_port()
    want = _expected(tls_discovery=True)
    with TracerRun(tmp_path, "--port", str(port), "--user", "nobody") as tr:
        _assert_dropped(tr.proc.pid, want, uid=pwd.getpwnam("nobody").pw_uid)
        with server([node, str(SERVERS / "tls_servers.js"), "https", str(port), *cert]) as srv:
            wait_uprobes_on(tr.proc.pid, node)
            urls = [f"https://127.0.0.1:{port}/ok/{i}" for i in range(N)]
            subprocess.run(["curl", "-sk", *urls, *["-o", "/dev/null"] * N], check=True,
                           timeout=30)
            time.sleep(0.5)
    assert os.path.realpath(node) in tr.summary["tls_libraries"], tr.summary
    spans = tr.by("server", srv.pid)
    assert [(s["path"], s["status"], s["tls"]) for s in spans] == \
        [(f"/ok/{i}", 200, True) for i in range(N)]
    assert tr.returncode == 0 and "Traceback" not in tr.stderr


def test_starts_as_a_user_with_only_the_deployment_set(tmp_path):
    """What the systemd unit and the DaemonSet grant (privileges.START, ambient,
    as nobody) is enough to load, attach and trace; the drop then keeps the
    documented runtime set."""
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) is not installed")
    caps = ",".join("+" + c.lower().removeprefix("cap_")
                    for c in privileges.start_caps(inject=False, user=False))
    out = Path(tempfile.mkdtemp(prefix="httptrace-", dir="/tmp"))
    out.chmod(0o777)  # the tracer writes here as nobody
    try:
        port = free_port()
        want = _expected(tls_discovery=True)
        tr = TracerRun(out, "--port", str(port))
        # as deploy/systemd/httptrace.service: another user, ambient caps, no_new_privs
        tr.argv = [setpriv, "--no-new-privs", "--reuid", "nobody", "--regid", "nogroup",
                   "--clear-groups", f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
                   f"--bounding-set=-all,{caps}", *tr.argv]
        with py_server(port) as srv, tr:
            _assert_dropped(tr.proc.pid, want, uid=pwd.getpwnam("nobody").pw_uid)
            _requests_23(port)
        _assert_23(tr, srv.pid, want)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_bad_user_is_one_line_exit_2():
    p = subprocess.run([sys.executable, "-m", "tracer", "run", "--user", "no-such-user-h5",
                        "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "tracer: --user no-such-user-h5: no such user (create it, or pass an existing name "
        "or uid)"]
