"""Filters and sampling end to end: the real tracer CLI with --config, a real
server, real clients. Count-exact: of 23 requests, exactly the expected ones
become spans and every other one is counted (per reason)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.tracing import free_port, py_server
from tests.kernel.conftest import require

N = 23


@pytest.fixture(autouse=True)
def _needs_kernel():
    require("btf", "ringbuf", "tracepoint_syscalls")


def plan(n=N):
    """(method, path): GET/POST mixed; /ok, /missing, /fail paths."""
    kinds = ["ok", "ok", "missing", "ok", "fail"]
    return [("POST" if i % 3 == 1 else "GET", f"/{kinds[i % 5]}/{i}") for i in range(n)]


class Tracer:
    """`python -m tracer run --config FILE` with its stderr read by a thread,
    so a test can wait for a line (tracing started, config reloaded, adaptive
    sampling engaged)."""

    def __init__(self, tmp_path: Path, config: str, *args: str):
        self.cfg = tmp_path / "tracer.toml"
        self.cfg.write_text(config)
        self.out = tmp_path / "spans.jsonl"
        self.argv = [sys.executable, "-m", "tracer", "run", "--output", str(self.out),
                     "--config", str(self.cfg), *args]
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.spans: list[dict] = []
        self.summary: dict = {}

    def __enter__(self) -> Tracer:
        self.proc = subprocess.Popen(self.argv, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("tracer: tracing")
        return self

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for(self, text: str, start: int = 0, timeout: float = 20.0) -> int:
        """Index of the first stderr line from `start` on that contains text."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                    if self.lines[i] == "<eof>":
                        raise AssertionError(f"tracer exited before {text!r}: {self.lines}")
                left = deadline - time.monotonic()
                if left <= 0:
                    self.proc.kill()
                    raise AssertionError(f"no {text!r} within {timeout} s: {self.lines}")
                self._cond.wait(left)

    def wait_spans(self, n: int, timeout: float = 20.0) -> None:
        """Until the output holds n spans (flushed once per housekeeping tick):
        what was sent has been parsed under the configuration in force."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.out.read_bytes().count(b"\n") if self.out.exists() else 0
            if got >= n:
                return
            assert time.monotonic() < deadline, f"{got} of {n} spans within {timeout} s"
            time.sleep(0.1)

    def reload(self, config: str, expect: str = "config reloaded") -> None:
        mark = len(self.lines)
        self.cfg.write_text(config)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for(expect, mark)

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)  # let the last events reach the ring buffer
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        finally:
            self.proc.kill()
        self._reader.join(timeout=10)
        self.stderr = "".join(self.lines)
        assert self.proc.returncode == 0, self.stderr
        self.spans = [json.loads(line) for line in self.out.read_text().splitlines()]
        self.summary = json.loads(Path(str(self.out) + ".summary.json").read_text())


def _send(port, reqs, headers=None, session=None):
    for i, (method, path) in enumerate(reqs):
        send = session.request if session else requests.request
        r = send(method, f"http://127.0.0.1:{port}{path}", data=b"x" if method == "POST" else None,
                 headers=headers(i) if headers else None)
        assert r.status_code in (200, 404, 500)


def _server_paths(tr, pid):
    return sorted((s["method"], s["path"]) for s in tr.spans
                  if s["kind"] == "server" and s["pid"] == pid)


def test_path_exclude_globs_23_exact(tmp_path):
    port = free_port()
    reqs = plan()
    excluded = [r for r in reqs if r[1].startswith("/fail/") or r[1].startswith("/missing/1")]
    assert len(excluded) == 6  # /fail/4, 9, 14, 19 and /missing/12, 17
    with py_server(port, 1) as srv:
        conf = (f"[scope]\npids = [{srv.pid}]\n"
                '[filter]\nexclude_paths = ["/fail/*", "/missing/1*"]\n')
        with Tracer(tmp_path, conf) as tr:
            _send(port, reqs)
    kept = sorted(r for r in reqs if r not in excluded)
    assert _server_paths(tr, srv.pid) == kept
    assert len(tr.spans) == N - 6
    assert tr.summary["spans_filtered_path"] == 6
    assert tr.summary["spans_filtered"] == 6
    assert tr.summary["spans_emitted"] == N - 6
    assert "filtered 6" in tr.stderr


def test_include_paths_and_method_filter_23_exact(tmp_path):
    port = free_port()
    reqs = plan()
    posts = [r for r in reqs if r[0] == "POST"]
    assert len(posts) == 8
    with py_server(port, 1) as srv:
        conf = (f"[scope]\npids = [{srv.pid}]\n"
                '[filter]\ninclude_paths = ["/ok/*", "/missing/*"]\nmethods = ["get"]\n')
        with Tracer(tmp_path, conf) as tr:
            _send(port, reqs)
    by_path = [r for r in reqs if r[1].startswith("/fail/")]  # 4, of which 2 are POST
    by_method = [r for r in posts if r not in by_path]
    kept = sorted(r for r in reqs if r not in by_path and r not in by_method)
    assert _server_paths(tr, srv.pid) == kept
    assert len(kept) == N - 4 - 6
    assert tr.summary["spans_filtered_path"] == 4
    assert tr.summary["spans_filtered_method"] == 6
    assert tr.summary["spans_filtered"] == 10


def test_parent_sampled_flag_honoured_ratio_zero_for_roots(tmp_path):
    """10 requests say sampled (01), 13 say not (00): exactly the 10 are kept,
    with the caller's trace ids; with ratio 0 no root would be."""
    port = free_port()
    reqs = plan()
    tids = [f"{i + 1:032x}" for i in range(N)]

    def headers(i):
        return {"traceparent": f"00-{tids[i]}-{i + 1:016x}-{'01' if i % 5 < 2 else '00'}"}

    keep = [i for i in range(N) if i % 5 < 2]
    assert len(keep) == 10
    with py_server(port, 1) as srv:
        conf = f"[scope]\npids = [{srv.pid}]\n[sampling]\nratio = 0.0\n"
        with Tracer(tmp_path, conf) as tr:
            _send(port, reqs, headers)
            _send(port, [("GET", "/ok/root")])  # no traceparent: a root, ratio 0
    spans = [s for s in tr.spans if s["pid"] == srv.pid]
    assert sorted(s["trace_id"] for s in spans) == sorted(tids[i] for i in keep)
    assert all(s["parent_span_id"] == f"{int(s['trace_id'], 16):016x}" for s in spans)
    assert tr.summary["spans_sampled_out"] == 13 + 1
    assert tr.summary["spans_sampled_out_by_parent"] == 13
    assert tr.summary["spans_emitted"] == 10


CLIENT = """
import ctypes, http.client, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME: this comm
for i in range(int(sys.argv[3])):
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]))
    c.request("GET", f"/ok/{sys.argv[1]}-{i}")
    c.getresponse().read()
    c.close()
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0)  # still in /proc for a while
"""


def _two_named_clients(tmp_path, conf_for):
    """Clients named h4keep (10 requests) and h4skip (13) against one server,
    traced on its port with the config that conf_for(server comm) adds."""
    port = free_port()
    with py_server(port, 1) as srv:
        server_comm = Path(f"/proc/{srv.pid}/comm").read_text().strip()
        with Tracer(tmp_path, f"[scope]\nports = [{port}]\n" + conf_for(server_comm)) as tr:
            for name, n in (("h4keep", 10), ("h4skip", 13)):
                subprocess.run([sys.executable, "-c", CLIENT, name, str(port), str(n)],
                               check=True, timeout=30)
    tr.server_pid = srv.pid
    return (tr, [s for s in tr.spans if s["kind"] == "client"],
            [s for s in tr.spans if s["kind"] == "server"], server_comm)


def test_process_name_filter_two_clients(tmp_path):
    """Client spans of the process named h4keep are kept (10), those of
    h4skip (13) are counted; the server's spans (23) all stay."""
    tr, clients, servers, _ = _two_named_clients(
        tmp_path, lambda comm: f'[filter]\nprocesses = ["h4keep", "{comm[:4]}*"]\n')
    assert sorted(s["path"] for s in clients) == sorted(f"/ok/h4keep-{i}" for i in range(10))
    assert {s["comm"] for s in clients} == {"h4keep"}
    assert len(servers) == 23 and {s["pid"] for s in servers} == {tr.server_pid}
    assert tr.summary["spans_filtered_process"] == 13
    assert tr.summary["spans_filtered"] == 13


def test_process_name_scope_in_kernel(tmp_path):
    """[scope] processes compares comm in the kernel: h4skip's 13 requests
    never leave it (no event, no span, nothing filtered in user space)."""
    tr, clients, servers, server_comm = _two_named_clients(
        tmp_path, lambda comm: f'processes = ["h4keep", "{comm}"]\n')
    assert sorted(s["path"] for s in clients) == sorted(f"/ok/h4keep-{i}" for i in range(10))
    assert len(servers) == 23 and {s["comm"] for s in servers} == {server_comm}
    assert tr.summary["spans_filtered"] == 0
    # per exchange: an open, 2 data events and a close on each traced side
    # (the server side of all 23, the client side of h4keep's 10)
    assert tr.summary["spans_emitted"] == 33
    assert tr.summary["incomplete_requests"] == 0 and tr.summary["unparsed_bytes"] == 0


def _link_ids(pid: int) -> set[int]:
    """Ids of the BPF links the process holds (fdinfo of its link fds)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("link_id:"):
                ids.add(int(line.split()[1]))
    return ids


def test_sighup_reload_switches_filters_probes_stay(tmp_path):
    """Batch 1 under config A (exclude /fail/*), batch 2 under config B
    (POST only), then a bad file: batch 3 still under B. Same BPF links
    throughout."""
    port = free_port()
    reqs = plan()
    fails = [r for r in reqs if r[1].startswith("/fail/")]
    posts = [r for r in reqs if r[0] == "POST"]
    with py_server(port, 1) as srv:
        scope = f"[scope]\npids = [{srv.pid}]\n"
        with Tracer(tmp_path, scope + '[filter]\nexclude_paths = ["/fail/*"]\n') as tr:
            links = _link_ids(tr.proc.pid)
            assert len(links) >= 20
            _send(port, reqs, lambda i: {"x-request-id": f"a-{i}"})
            tr.wait_spans(N - len(fails))  # batch 1 parsed before the switch
            tr.reload(scope + '[filter]\nmethods = ["POST"]\n')
            _send(port, reqs, lambda i: {"x-request-id": f"b-{i}"})
            tr.wait_spans(N - len(fails) + len(posts))
            tr.reload(scope + "[filter]\nmethods = POST\n", expect="reload failed")
            _send(port, reqs, lambda i: {"x-request-id": f"c-{i}"})
            # an exe filter needs a capability dropped at start: refused too
            tr.reload(scope + '[filter]\nexecutables = ["/usr/*"]\n', expect="reload failed")
            # every link attached at start is still the same link (TLS discovery
            # may add uprobe links for libraries loaded meanwhile)
            assert links <= _link_ids(tr.proc.pid)
    batch = {}
    for s in tr.spans:
        rid = s["attributes"]["http.request.header.x-request-id"]
        batch.setdefault(rid[0], []).append((s["method"], s["path"]))
    assert sorted(batch["a"]) == sorted(r for r in reqs if r not in fails)
    assert sorted(batch["b"]) == sorted(posts)
    assert sorted(batch["c"]) == sorted(posts)
    assert tr.summary["spans_filtered_path"] == len(fails) == 4
    assert tr.summary["spans_filtered_method"] == 2 * (N - len(posts)) == 30
    assert tr.summary["config_reloads"] == 1
    assert tr.summary["config_reload_errors"] == 2
    assert "keeping the previous configuration" in tr.stderr
    assert "filter.executables needs CAP_SYS_PTRACE" in tr.stderr


def test_sighup_reload_switches_kernel_scope(tmp_path):
    """[scope] ports A -> B on SIGHUP: the kernel's filter maps change in
    place. 23 exchanges to A before (46 spans: both ends), 23 to A after
    (none), 23 to B after (46)."""
    port_a, port_b = free_port(), free_port()
    reqs = plan()
    with py_server(port_a, 1) as srv_a, py_server(port_b, 1) as srv_b:
        with Tracer(tmp_path, f"[scope]\nports = [{port_a}]\n") as tr:
            links = _link_ids(tr.proc.pid)
            _send(port_a, reqs, lambda i: {"x-request-id": f"a-{i}"})
            tr.wait_spans(2 * N)
            tr.reload(f"[scope]\nports = [{port_b}]\n")
            _send(port_a, reqs, lambda i: {"x-request-id": f"b-{i}"})
            _send(port_b, reqs, lambda i: {"x-request-id": f"c-{i}"})
            assert links <= _link_ids(tr.proc.pid)
    batch = {}
    for s in tr.spans:
        rid = s["attributes"]["http.request.header.x-request-id"]
        batch.setdefault(rid[0], []).append(s)
    assert sorted(batch) == ["a", "c"]
    assert len(batch["a"]) == len(batch["c"]) == 2 * N
    assert {s["pid"] for s in batch["a"] if s["kind"] == "server"} == {srv_a.pid}
    assert {s["pid"] for s in batch["c"] if s["kind"] == "server"} == {srv_b.pid}
    assert tr.summary["config_reloads"] == 1 and tr.summary["spans_filtered"] == 0


def test_adaptive_sampling_counts_every_request_in_kernel(tmp_path):
    """A CPU budget no agent can meet forces pressure: the kernel samples out
    every new connection (min_keep 0) and counts its requests; spans plus
    requests sampled out is exactly 23 (12 on one keep-alive connection)."""
    port = free_port()
    reqs = plan()
    with py_server(port, 1) as srv:
        conf = (f"[scope]\npids = [{srv.pid}]\n"
                "[adaptive]\nenabled = true\ncpu_budget = 1e-9\nmin_keep = 0.0\n")
        with Tracer(tmp_path, conf) as tr:
            tr.wait_for("adaptive sampling: keeping 0.00%")
            with requests.Session() as session:
                _send(port, reqs[:12], session=session)
            _send(port, reqs[12:])
    s = tr.summary
    assert len(tr.spans) == 0
    assert s["requests_sampled_out"] == N
    assert len(tr.spans) + s["requests_sampled_out"] == N
    assert s["conns_sampled_out"] == 1 + 11
    assert s["adaptive_sampling_engaged"] == 1
    # one step down, or two on a loaded machine (the first tick's CPU sample
    # can be small: keep 1e-6, then 0): never back up
    keeps = [k for _, k in s["adaptive_transitions"]]
    assert 1 <= len(keeps) <= 2 and keeps == sorted(keeps, reverse=True), keeps
    assert keeps[-1] < 1 / 65536 and s["adaptive_keep"] < 1 / 65536
    assert "23 requests on 12 connections" in tr.stderr


def test_adaptive_sampling_engages_on_ring_fill_and_relaxes(tmp_path):
    """Ring-fill pressure (threshold 1e-6: any record waiting at a poll)
    engages it at min_keep 0.25; 23 requests then; after the load, 1 quiet
    tick per step doubles the share back: 0.25 -> 0.5 -> 1.0. Both ends are
    traced: spans + requests sampled out == 2 x requests, exactly."""
    port = free_port()
    with py_server(port, 1):
        conf = (f"[scope]\nports = [{port}]\n[adaptive]\nenabled = true\nring_fill = 1e-6\n"
                "cpu_budget = 100.0\nmin_keep = 0.25\nrelax_after = 1\n")
        with Tracer(tmp_path, conf) as tr:
            # bounded by time, not count: engagement waits for a housekeeping
            # tick (1 s), and a fast machine sends 500 requests in less
            sent, deadline = 0, time.monotonic() + 60
            while not any("keeping 25.00%" in line for line in tr.lines):
                assert time.monotonic() < deadline, (sent, tr.lines)
                _send(port, [("GET", f"/ok/warm-{sent}")])
                sent += 1
            _send(port, plan())
            sent += N
            tr.wait_for("keeping 100.00%")
    s = tr.summary
    keeps = [keep for _, keep in s["adaptive_transitions"]]
    # [0.25, 0.5, 1.0]; a second of silence amid the load (a starved client)
    # may add a relax-and-engage-again step, never another value
    assert keeps[0] == 0.25 and keeps[-2:] == [0.5, 1.0] and set(keeps) == {0.25, 0.5, 1.0}
    assert s["adaptive_sampling_engaged"] == 1 + keeps[:-1].count(1.0)
    assert s["adaptive_keep"] == 1.0
    assert len(tr.spans) + s["requests_sampled_out"] == 2 * sent
    assert s["conns_sampled_out"] == s["requests_sampled_out"]  # one request per connection
    assert s["requests_sampled_out"] > 0
    assert "ring fill" in tr.stderr and "pressure fell" in tr.stderr


def test_executable_filter_curl_and_python_clients(tmp_path):
    """filter.executables = [python's real path]: the python server's 23
    spans and the python client's 13 stay; curl's 10 are counted as exe.
    /proc/PID/exe is read when the span is emitted: the python client stays
    a second, curl (gone by then, or not python) is filtered either way."""
    port = free_port()
    exe = os.path.realpath(sys.executable)
    with py_server(port, 1):
        conf = f'[scope]\nports = [{port}]\n[filter]\nexecutables = ["{exe}"]\n'
        with Tracer(tmp_path, conf) as tr:
            for i in range(10):
                subprocess.run(["curl", "-s", "-o", "/dev/null",
                                f"http://127.0.0.1:{port}/ok/curl-{i}"], check=True, timeout=30)
            subprocess.run([sys.executable, "-c", CLIENT, "h4py", str(port), "13", "1.0"],
                           check=True, timeout=30)
    clients = [s for s in tr.spans if s["kind"] == "client"]
    assert sorted(s["path"] for s in clients) == sorted(f"/ok/h4py-{i}" for i in range(13))
    assert len([s for s in tr.spans if s["kind"] == "server"]) == 23
    assert tr.summary["spans_filtered_exe"] == 10
    assert tr.summary["spans_filtered"] == 10


def test_cgroup_filter_by_path_glob(tmp_path):
    """The server is moved into a fresh cgroup v2: its spans stay (path
    glob); this process's 23 client spans (another cgroup) are counted. A short-lived client started in the cgroup keeps its 7 spans by
    the path glob, though it has left /proc when they are emitted: the
    kernel's cgroup id of its connections is resolved to the path."""
    root = next((r for r in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                 if os.path.exists(f"{r}/cgroup.procs")
                 and Path("/proc/self/cgroup").read_text().find("0::") >= 0), None)
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    cg = Path(root) / f"h4test-{os.getpid()}"
    port = free_port()
    cg.mkdir()
    try:
        with py_server(port, 1) as srv:
            (cg / "cgroup.procs").write_text(str(srv.pid))
            conf = (f"[scope]\nports = [{port}]\n"
                    f'[filter]\ncgroups = ["/h4none-*", "/{cg.name[:6]}*-{os.getpid()}"]\n')
            with Tracer(tmp_path, conf) as tr:
                _send(port, plan())
                subprocess.run(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh",
                                sys.executable, "-c", CLIENT, "h4cg", str(port), "7"],
                               check=True, timeout=30)
            srv.kill()
            srv.wait()
    finally:
        cg.rmdir()
    servers = [s for s in tr.spans if s["kind"] == "server"]
    clients = [s for s in tr.spans if s["kind"] == "client"]
    assert sorted((s["method"], s["path"]) for s in servers) == \
        sorted(plan() + [("GET", f"/ok/h4cg-{i}") for i in range(7)])
    assert {s["pid"] for s in servers} == {srv.pid}
    assert sorted(s["path"] for s in clients) == sorted(f"/ok/h4cg-{i}" for i in range(7))
    assert tr.summary["spans_filtered_cgroup"] == 23


def test_head_sampling_drops_traces_not_metrics(tmp_path):
    """ratio 0: no span is written, yet the RED metrics count all 23
    requests (sampling happens after the metrics see each span)."""
    import urllib.request

    port, mport = free_port(), free_port()
    with py_server(port, 1) as srv:
        conf = f"[scope]\npids = [{srv.pid}]\n[sampling]\nratio = 0.0\n"
        with Tracer(tmp_path, conf, "--metrics", f"127.0.0.1:{mport}") as tr:
            _send(port, plan())
            deadline = time.monotonic() + 20
            while True:
                text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                              timeout=5).read().decode()
                total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                            if line.startswith("httptrace_requests_total{"))
                if total >= N or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    assert total == N
    assert tr.spans == []
    assert tr.summary["spans_sampled_out"] == N and tr.summary["spans_emitted"] == 0
