"""The benchmark scenarios: which servers run where, what load drives them,
and which spans the tracer should emit per request (the expected chain).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class Scenario:
    name: str
    short: str
    servers: tuple[Server, ...]
    load_host: str
    traced_roles: tuple[str, ...]
    chain: tuple[Expected, ...]
    default_rps: float
    config: dict = field(default_factory=dict)
    # Restart the servers before every run, so each traced run sees their
    # connections from the start (as when the tracer runs before the service
    # starts). Needed for HTTP/2 between services: the HPACK table of a
    # connection opened before the tracer cannot be known, and a long-lived
    # gRPC channel would measure that header loss, not the parser.
    fresh_servers: bool = False
    # overload/soak (harness/overload.py): their own run plan instead of the
    # A/A + alternating pairs, a default duration, the tracer's TOML config,
    # a CPU quota put on the tracer once it is ready (cores, 0: none), and
    # Locust users that reconnect every N requests (new connections are what
    # adaptive sampling acts on)
    plan: str = "pairs"
    default_duration: float | None = None
    tracer_config: str = ""
    tracer_cpu_quota: float = 0.0
    reconnect_every: int = 0


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
            chain=http_chain_links, default_rps=100,
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
            chain=http_chain_links, default_rps=100,
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
            chain=http_chain_links, default_rps=100,
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
            chain=(Expected("frontend", "server", "load"),), default_rps=100,
            config={"server": "grpcio", "grpc_threads": 8},
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
            chain=(Expected("frontend", "server", "load"),), default_rps=6000,
            config={"server": "asyncio minimal HTTP/1.1"},
        )
    if name in ("overload", "soak"):
        from harness.overload import scenario

        return scenario(name, gt, stress=build("stress", workdir))
    raise KeyError(name)


NAMES = ("http-chain", "stress", "grpc", "mixed", "http-chain-tls", "overload", "soak")
