"""The netns topology: connectivity along the chain, isolation, and a clean teardown."""

from __future__ import annotations

import subprocess
import sys

from netns.topology import Topology


def _curl_from(topo: Topology, role: str, url: str) -> str:
    code = ("import sys, urllib.request\n"
            "try:\n"
            "    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)\n"
            "except OSError as e:\n"
            "    print('error', type(e).__name__)\n")
    res = subprocess.run(["ip", "netns", "exec", topo.ns(role), sys.executable, "-c", code, url],
                         capture_output=True, text=True, timeout=30, check=False)
    return res.stdout.strip()


def test_chain_connectivity_and_teardown(topology: Topology):
    backend = Topology.ADDRS["backend"]
    srv = topology.spawn("backend", [sys.executable, "-m", "http.server", "-b", backend, "8099"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = subprocess.run(["ip", "netns", "exec", topology.ns("frontend"), sys.executable, "-m",
                            "harness.probe", f"{backend}:8099", "--timeout", "10"],
                           capture_output=True, text=True, check=False)
    assert probe.returncode == 0, probe.stderr
    assert _curl_from(topology, "frontend", f"http://{backend}:8099/") == "200"
    # The client reaches the frontend only: no route to the backend.
    assert _curl_from(topology, "client", f"http://{backend}:8099/").startswith("error")
    assert srv.poll() is None
    assert len({topology.inode(r) for r in ("client", "frontend", "backend")}) == 3


def test_teardown_on_exception_kills_everything():
    topo = Topology()
    try:
        with topo:
            topo.spawn("frontend", ["sleep", "300"])
            # A grandchild outside the spawned process group must die too.
            topo.spawn("backend", ["sh", "-c", "setsid sleep 300 & wait"])
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert topo.leftovers() == {"netns": [], "links": [], "pids": []}
