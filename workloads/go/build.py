"""Build the Go workloads with the system toolchain (Debian's golang-go),
standard library only: nothing is downloaded (GOPROXY=off).

    path = build(out_dir, "front", stripped=True)   # -ldflags="-s -w"
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).parent


class GoMissing(RuntimeError):
    pass


def go() -> str:
    path = shutil.which("go") or next((p for p in ("/usr/bin/go", "/usr/lib/go/bin/go")
                                       if os.path.exists(p)), None)
    if path is None:
        raise GoMissing("the Go toolchain is not installed (apt-get install golang-go)")
    return path


def version() -> str:
    """`go env GOVERSION`, e.g. go1.19.8."""
    return subprocess.run([go(), "env", "GOVERSION"], check=True, capture_output=True,
                          text=True).stdout.strip()


def build(out_dir: str | os.PathLike, name: str = "front", *, stripped: bool = False) -> Path:
    out = Path(out_dir) / (name + ("-stripped" if stripped else ""))
    cmd = [go(), "build", "-trimpath", "-o", str(out)]
    if stripped:
        cmd.append("-ldflags=-s -w")
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    if "GOCACHE" not in env and "HOME" not in env:  # go needs one; the user's is reused
        env["GOCACHE"] = str(Path(out_dir) / ".gocache")
    subprocess.run([*cmd, "./" + name], cwd=HERE, env=env, check=True, capture_output=True)
    return out
