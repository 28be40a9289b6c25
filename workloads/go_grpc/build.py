"""Build the grpc-go front (workloads/go_grpc/front) offline, from Debian's
Go library packages (golang-google-grpc-dev and what it depends on: their
sources live under /usr/share/gocode/src).

    path = build(out_dir, stripped=True)   # -ldflags="-s -w"

The build is a module build, as real services are: go.mod here pins each
module at the version Debian ships, and a vendor tree made in out_dir
(symlinks to the Debian sources, vendor/modules.txt from go.mod) lets
`go build -mod=vendor` run without a module proxy. So the executable's
build info lists `google.golang.org/grpc v1.33.3` like any grpc-go service,
and tracer/golang.py reads the version from there for stripped binaries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from workloads.go.build import GoMissing, go
from workloads.go.build import version as go_version

HERE = Path(__file__).parent
GOCODE = Path("/usr/share/gocode/src")
APT = "golang-google-grpc-dev"
__all__ = ["GoMissing", "build", "go_version", "requirements"]


def requirements() -> dict[str, str]:
    """module -> version, the require block of go.mod."""
    text = (HERE / "go.mod").read_text()
    block = re.search(r"require \((.*?)\)", text, re.S)
    return dict(line.split() for line in block.group(1).strip().splitlines())


def _packages(root: Path) -> list[str]:
    """The Go packages of one module's source tree (directories with .go
    files), without nested modules, testdata and examples."""
    out = []
    for d, dirs, files in os.walk(root):
        rel = Path(d).relative_to(root)
        dirs[:] = sorted(x for x in dirs if x not in ("testdata", "vendor", "debian")
                         and not x.startswith((".", "_"))
                         and not (Path(d, x) / "go.mod").exists())
        if any(f.endswith(".go") and not f.endswith("_test.go") for f in files):
            out.append(str(rel))
    return out


def _vendor(src: Path) -> None:
    """src/vendor: a symlink per module to Debian's sources, and modules.txt."""
    lines = []
    for mod, ver in requirements().items():
        root = GOCODE / mod
        if not (root / "go.mod").exists():
            raise GoMissing(f"{mod} is not installed (apt-get install {APT})")
        link = src / "vendor" / mod
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(root)
        m = re.search(r"^go (\S+)", (root / "go.mod").read_text(), re.M)
        lines += [f"# {mod} {ver}", "## explicit" + (f"; go {m.group(1)}" if m else "")]
        lines += [mod if p == "." else f"{mod}/{p}" for p in _packages(root)]
    (src / "vendor" / "modules.txt").write_text("\n".join(lines) + "\n")


def _check_grpc_version() -> None:
    want = requirements()["google.golang.org/grpc"].lstrip("v")
    try:
        have = re.search(r'const Version = "([^"]+)"',
                         (GOCODE / "google.golang.org/grpc/version.go").read_text()).group(1)
    except (OSError, AttributeError):
        raise GoMissing(f"grpc-go is not installed (apt-get install {APT})") from None
    if have != want:
        raise GoMissing(f"Debian's grpc-go is {have}, go.mod pins {want}: update "
                        f"workloads/go_grpc/go.mod (and tracer/golang.py GRPC_OFFSETS)")


def build(out_dir: str | os.PathLike, *, stripped: bool = False) -> Path:
    out_dir = Path(out_dir)
    out = out_dir / ("grpc-front" + ("-stripped" if stripped else ""))
    _check_grpc_version()
    src = out_dir / ("grpc-src" + ("-stripped" if stripped else ""))
    shutil.rmtree(src, ignore_errors=True)
    (src / "front").mkdir(parents=True)
    shutil.copy(HERE / "go.mod", src / "go.mod")
    shutil.copy(HERE / "front" / "main.go", src / "front" / "main.go")
    _vendor(src)
    cmd = [go(), "build", "-mod=vendor", "-trimpath", "-o", str(out)]
    if stripped:
        cmd.append("-ldflags=-s -w")
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=vendor", "GOTOOLCHAIN": "local",
           "GO111MODULE": "on"}
    if "GOCACHE" not in env and "HOME" not in env:  # go needs one; the user's is reused
        env["GOCACHE"] = str(out_dir / ".gocache")
    proc = subprocess.run([*cmd, "./front"], cwd=src, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"go build of the grpc-go front failed: {proc.stderr.strip()}")
    return out
