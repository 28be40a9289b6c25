"""The benchmark scenarios: which servers run where, what load drives them,
which spans the tracer should emit per request (the expected chain), and
each scenario's run plan (its runs and, for overload/soak, its own figures
and report sections).

Two roles in the default bench: `stress` is the cost scenario (a fast
server at a fixed 1k req/s from a paced C client, long enough runs, BPF
statistics on, extra pairs allowed until every gated figure is resolved);
`http-chain`, `grpc` and `mixed` score accuracy and correlation (short
runs at 100 req/s, no A/A pair).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import overload
from harness.plan import BPF_RUNS, PACED, RunPlan
from netns.topology import Topology

FRONTEND = Topology.ADDRS["frontend"]
BACKEND = Topology.ADDRS["backend"]

# Gunicorn settings, recorded in every report: one worker per service on a
# 2-core machine (two services plus Locust plus the tracer share the cores),
# threads so the frontend can wait on the backend without stalling.
GUNICORN = {"worker_class": "gthread", "workers": 1, "threads": 4}


@dataclass(frozen=True)
class Server:
    role: str  # namespace role
    service: str  # name in ground truth
    argv: tuple[str, ...]
    port: int
    addr: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Expected:
    """A span the tracer should emit for every request: ``parent`` names the
    expected parent (another Expected key, or "load" for the load generator)."""

    service: str
    kind: str
    parent: tuple[str, str] | str


# The cost scenario: at 1k req/s a request's share of the tracer's fixed
# costs is small, and 8 s runs give 8,000 latency samples each.
COST_PLAN = RunPlan(rps=1000, duration=8.0, repeat=5, aa=True, bpf=BPF_RUNS, loadgen=PACED,
                    extra_s=120.0)
# Accuracy and correlation: every traced run is scored; no A/A pair, no BPF.
ACCURACY_PLAN = RunPlan(rps=100, duration=3.0, repeat=2, aa=False)


@dataclass(frozen=True)
class Scenario:
    name: str
    short: str
    servers: tuple[Server, ...]
    load_host: str
    traced_roles: tuple[str, ...]
    chain: tuple[Expected, ...]
    plan: RunPlan
    config: dict = field(default_factory=dict)
    load_path: str = "/ping"  # what the paced client asks for
    # Restart the servers before every run, so each traced run sees their
    # connections from the start (as when the tracer runs before the service
    # starts). Needed for HTTP/2 between services: the HPACK table of a
    # connection opened before the tracer cannot be known, and a long-lived
    # gRPC channel would measure that header loss, not the parser.
    fresh_servers: bool = False
    # overload/soak (harness/overload.py): the tracer's TOML config, a CPU
    # quota put on the tracer quota_after_s after it is ready (cores, 0:
    # none), and Locust users that reconnect every N requests (new
    # connections are what adaptive sampling acts on)
    tracer_config: str = ""
    tracer_cpu_quota: float = 0.0
    quota_after_s: float = 0.0
    reconnect_every: int = 0
    # A custom plan: run_plan(runner, plan) -> rows replaces A/A + pairs;
    # planned(plan) counts its runs; figures(figs, runs, ts) adds figures;
    # sections(out, runs, ts, figs) -> (tables, images) for the report.
    run_plan: Callable | None = None
    planned: Callable | None = None
    figures: Callable | None = None
    sections: Callable | None = None

    def runs_planned(self, plan: RunPlan) -> int:
        return self.planned(plan) if self.planned else len(plan.specs())


def _gunicorn(app: str, bind: str, *extra: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "gunicorn", "--bind", bind,
            "--worker-class", GUNICORN["worker_class"], "--workers", str(GUNICORN["workers"]),
            "--threads", str(GUNICORN["threads"]), "--log-level", "warning",
            "--graceful-timeout", "2", *extra, app)


def _with_cert(cert: str, key: str, argv: tuple[str, ...]) -> tuple[str, ...]:
    """argv run through workloads.tls_cert, which makes the certificate (for
    both service addresses) at start if it is missing."""
    return (sys.executable, "-m", "workloads.tls_cert", cert, key, f"{FRONTEND},{BACKEND}",
            "--", *argv)


def build(name: str, workdir: Path) -> Scenario:
    """The scenario ``name`` with its files (ground truth, SQLite) under ``workdir``."""
    gt = str(workdir / "ground_truth.jsonl")
    py = sys.executable
    http_chain_links = (
        Expected("frontend", "server", "load"),
        Expected("frontend", "client", ("frontend", "server")),
        Expected("backend", "server", ("frontend", "client")),
    )
    if name == "http-chain":
        return Scenario(
            name, "hc",
            servers=(
                Server("backend", "backend",
                       _gunicorn("workloads.flask_chain.backend:create_app()", f"{BACKEND}:8081"),
                       8081, BACKEND, {"GT_PATH": gt, "DB_PATH": str(workdir / "backend.db")}),
                Server("frontend", "frontend",
                       _gunicorn("workloads.flask_chain.frontend:create_app()", f"{FRONTEND}:8080"),
                       8080, FRONTEND, {"GT_PATH": gt, "BACKEND_URL": f"http://{BACKEND}:8081"}),
            ),
            load_host=f"http://{FRONTEND}:8080", traced_roles=("frontend", "backend"),
            chain=http_chain_links, plan=ACCURACY_PLAN,
            config={"server": "gunicorn", **GUNICORN, "db": "sqlite (WAL)"},
        )
    if name == "http-chain-tls":
        # http-chain over HTTPS at every hop (Python ssl -> system libssl):
        # the frontend verifies the backend with the same self-signed cert.
        cert, key = str(workdir / "tls-cert.pem"), str(workdir / "tls-key.pem")
        tls = ("--certfile", cert, "--keyfile", key)
        return Scenario(
            name, "hs",
            servers=(
                Server("backend", "backend",
                       _with_cert(cert, key, _gunicorn("workloads.flask_chain.backend:create_app()",
                                                       f"{BACKEND}:8081", *tls)),
                       8081, BACKEND, {"GT_PATH": gt, "DB_PATH": str(workdir / "backend.db")}),
                Server("frontend", "frontend",
                       _with_cert(cert, key, _gunicorn("workloads.flask_chain.frontend:create_app()",
                                                       f"{FRONTEND}:8080", *tls)),
                       8080, FRONTEND, {"GT_PATH": gt, "BACKEND_URL": f"https://{BACKEND}:8081",
                                        "REQUESTS_CA_BUNDLE": cert}),
            ),
            load_host=f"https://{FRONTEND}:8080", traced_roles=("frontend", "backend"),
            chain=http_chain_links, plan=ACCURACY_PLAN,
            config={"server": "gunicorn --certfile", **GUNICORN, "db": "sqlite (WAL)",
                    "tls": "OpenSSL 3 (Python ssl), self-signed"},
        )
    if name == "mixed":
        return Scenario(
            name, "mx",
            servers=(
                Server("backend", "backend",
                       (py, "-m", "workloads.grpc_service.server", "--bind", f"{BACKEND}:50051",
                        "--service", "backend", "--ground-truth", gt), 50051, BACKEND),
                Server("frontend", "frontend",
                       _gunicorn("workloads.mixed.frontend:create_app()", f"{FRONTEND}:8080"),
                       8080, FRONTEND, {"GT_PATH": gt, "BACKEND_GRPC": f"{BACKEND}:50051"}),
            ),
            load_host=f"http://{FRONTEND}:8080", traced_roles=("frontend", "backend"),
            chain=http_chain_links, plan=ACCURACY_PLAN,
            config={"server": "gunicorn + grpcio", **GUNICORN, "grpc_threads": 8,
                    "servers": "restarted before every run"},
            fresh_servers=True,
        )
    if name == "grpc":
        return Scenario(
            name, "gr",
            servers=(
                Server("frontend", "frontend",
                       (py, "-m", "workloads.grpc_service.server", "--bind", f"{FRONTEND}:50051",
                        "--service", "frontend", "--ground-truth", gt), 50051, FRONTEND),
            ),
            load_host=f"{FRONTEND}:50051", traced_roles=("frontend",),
            chain=(Expected("frontend", "server", "load"),), plan=ACCURACY_PLAN,
            config={"server": "grpcio", "grpc_threads": 8},
        )
    if name == "go-chain":
        # http-chain with a Go net/http front (workloads/go/front, built stripped
        # at server start): its calls share one keep-alive pool and forward
        # x-request-id (for scoring) but no traceparent, so each call's parent
        # comes from the goroutine links (tracer/golang.py, docs/golang.md).
        return Scenario(
            name, "gc",
            servers=(
                Server("backend", "backend",
                       _gunicorn("workloads.flask_chain.backend:create_app()", f"{BACKEND}:8081"),
                       8081, BACKEND, {"GT_PATH": gt, "DB_PATH": str(workdir / "backend.db")}),
                Server("frontend", "frontend",
                       (py, "-m", "workloads.go.run", str(workdir / "go"), "front", "--stripped",
                        "--", "-listen", f"{FRONTEND}:8080", "-backend", f"http://{BACKEND}:8081",
                        "-client", "shared", "-groundtruth", gt, "-service", "frontend"),
                       8080, FRONTEND),
            ),
            load_host=f"http://{FRONTEND}:8080", traced_roles=("frontend", "backend"),
            chain=http_chain_links, plan=ACCURACY_PLAN,
            config={"server": "Go net/http (stripped, -ldflags=-s -w; system golang-go), "
                              "shared keep-alive client + gunicorn backend",
                    **GUNICORN, "db": "sqlite (WAL)"},
        )
    if name == "stress":
        return Scenario(
            name, "st",
            servers=(
                Server("frontend", "frontend",
                       (py, "-m", "workloads.stress.server", "--host", FRONTEND, "--port", "8080",
                        "--ground-truth", gt), 8080, FRONTEND),
            ),
            load_host=f"http://{FRONTEND}:8080", traced_roles=("frontend",),
            chain=(Expected("frontend", "server", "load"),), plan=COST_PLAN,
            config={"server": "asyncio minimal HTTP/1.1",
                    "load": "harness/paced_client.c, open loop, "
                            "latency from each request's due time"},
        )
    if name in ("overload", "soak"):
        return overload.scenario(name, build("stress", workdir))
    raise KeyError(name)


NAMES = ("http-chain", "stress", "grpc", "mixed", "http-chain-tls", "overload", "soak",
         "go-chain")
DEFAULT_SCENARIOS = ("stress", "http-chain", "grpc", "mixed")
