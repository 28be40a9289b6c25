"""The cost scenario's load generator: harness/paced_client.c, an open-loop
paced keep-alive HTTP/1.1 client, built once with the system C compiler into
the ignored build/ directory (named by the source's hash)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("paced_client.c")
BUILD = Path(__file__).resolve().parents[1] / "build" / "harness"
CONNECTIONS = 4


class PacedError(RuntimeError):
    pass


def binary() -> Path:
    """The compiled client, built on first use."""
    exe = BUILD / f"paced_client-{hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]}"
    if exe.exists():
        return exe
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise PacedError("no C compiler for the paced load client: apt-get install gcc")
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_suffix(".tmp")
    res = subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise PacedError(f"cannot build {SOURCE.name}: {res.stderr.strip()[-300:]}")
    tmp.rename(exe)
    return exe


def command(host_url: str, path: str, rps: float, duration: float, tag: str,
            latencies: Path, requests: int = 0) -> list[str]:
    """argv for one run; host_url is ``http://ADDR:PORT``. With `requests`,
    exactly that many requests at `rps` (the duration follows)."""
    hostport = host_url.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.partition(":")
    if requests:
        duration = requests / rps
    return [str(binary()), host, port or "80", path, f"{rps:g}", f"{duration:g}",
            str(CONNECTIONS), tag, str(latencies), str(requests)]


def summary(stdout: str, rps: float) -> dict:
    """The client's JSON line, in harness/load.py's summary keys."""
    try:
        s = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as e:
        raise PacedError(f"paced client printed no summary: {stdout.strip()[-200:]!r}") from e
    s.update(offered_rps=rps, issued=s.get("requests"), cpu_warning=False,
             duration_s=s.get("end_unix", 0) - s.get("start_unix", 0))
    return s
