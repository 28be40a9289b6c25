"""Set up the bcc peer: Debian packages, a kernel header tree bcc can use,
tracefs. Idempotent; each step either succeeds or gives one line saying why
the peer cannot run (the harness then skips it with that reason).

bcc compiles its C with the running kernel's headers, which this kernel does
not ship. The peer reads no kernel struct (only syscall tracepoint
arguments, whose layout bcc takes from tracefs), so Debian's 6.1 headers
serve. bcc honours BCC_KERNEL_SOURCE but then expects one tree, while Debian
splits it in two (`-common` sources, `-amd64` generated headers and config):
`header_tree` joins them with symlinks under the repo's ignored build/
folder, and /lib/modules is left alone.

    python -m harness.peers.setup [--no-install]   # prints the peer's env or the reason
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Pinned: the Debian bookworm packages measured with this peer.
BCC_APT = "python3-bpfcc=0.26.0+ds-1"
HEADERS_PKG = "linux-headers-6.1.0-57-amd64"  # 6.1.192-3; the newest 6.1 ABI served
# Overrides, also how tests simulate a machine without bcc.
ENV_PYTHON = "HTTPTRACE_BCC_PYTHON"  # interpreter that imports bcc (default /usr/bin/python3)
ENV_HEADERS = "HTTPTRACE_BCC_HEADERS"  # a Debian linux-headers-*-amd64 directory
ENV_TREE = "HTTPTRACE_BCC_TREE"  # where the joined tree goes (default build/bcc-kernel)
SYS_PYTHON = "/usr/bin/python3"
TRACEFS = Path("/sys/kernel/tracing")
ARCH = "x86"


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; str(e) is the one-line reason."""


@dataclass
class BccEnv:
    python: str
    kernel_source: Path  # BCC_KERNEL_SOURCE
    headers: Path  # the -amd64 directory it was built from
    bcc_version: str
    notes: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "BCC_KERNEL_SOURCE": str(self.kernel_source)}


def _bcc_version(python: str) -> str | None:
    """bcc's version as that interpreter imports it, None if it cannot."""
    try:
        p = subprocess.run([python, "-c", "import bcc; print(bcc.__version__)"],
                           capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


def _installed_headers() -> list[Path]:
    found = [p for p in Path("/usr/src").glob("linux-headers-*-amd64")
             if re.fullmatch(r"linux-headers-\d+\.\d+\.\d+-\d+-amd64", p.name)]

    def key(p: Path) -> tuple[bool, tuple[int, ...]]:  # the pinned ones first, then newest
        return p.name == HEADERS_PKG, tuple(int(x) for x in re.findall(r"\d+", p.name))
    return sorted(found, key=key, reverse=True)


def _apt_install(pkgs: list[str]) -> str | None:
    """Install what is missing; None on success, else the reason."""
    missing = [p for p in pkgs
               if subprocess.run(["dpkg", "-s", p.split("=")[0]], capture_output=True,
                                 check=False).returncode != 0]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"not root: cannot apt-get install {' '.join(missing)}"
    if not shutil.which("apt-get"):
        return f"no apt-get to install {' '.join(missing)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:  # a stale package list: refresh once
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no message"])[-1]
        return f"apt-get install {' '.join(missing)} failed: {last}"
    return None


def header_tree(headers: Path, dest: Path) -> Path:
    """One kernel tree for bcc from Debian's split pair: symlinks to the
    -common sources plus the -amd64 generated headers and config. Rebuilt
    only when missing or made from other headers."""
    common = headers.with_name(headers.name.removesuffix("-amd64") + "-common")
    if headers.name.endswith("-amd64") and not common.is_dir():
        raise PeerUnavailable(f"{common} missing: reinstall {headers.name}")
    if not (headers / "include/generated/autoconf.h").is_file():
        raise PeerUnavailable(f"{headers} has no include/generated/autoconf.h: "
                              "not a configured linux-headers directory")
    tree = dest / headers.name
    stamp = tree / ".from"
    if stamp.is_file() and stamp.read_text() == f"{common}\n{headers}\n":
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    for sub in ("include", f"arch/{ARCH}/include"):
        (tree / sub).mkdir(parents=True)
        for src in (common / sub, headers / sub):
            if not src.is_dir():
                continue
            for entry in src.iterdir():
                link = tree / sub / entry.name
                if not link.exists():
                    link.symlink_to(entry)
    stamp.write_text(f"{common}\n{headers}\n")
    return tree


def ensure_tracefs() -> str | None:
    if (TRACEFS / "events").is_dir() or Path("/sys/kernel/debug/tracing/events").is_dir():
        return None
    p = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
                       capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return f"tracefs not mounted and mount failed: {p.stderr.strip() or p.returncode}"
    return None


def prepare_bcc(install: bool = True) -> BccEnv:
    """Everything the bcc peer needs, or PeerUnavailable with the reason."""
    python = os.environ.get(ENV_PYTHON, SYS_PYTHON)
    if not Path(python).is_file():
        raise PeerUnavailable(f"no interpreter {python} for bcc")
    notes = []
    version = _bcc_version(python)
    headers_override = os.environ.get(ENV_HEADERS)
    if install and (version is None or (not headers_override and not _installed_headers())):
        pkgs = [BCC_APT] + ([] if headers_override or _installed_headers() else [HEADERS_PKG])
        err = _apt_install(pkgs)
        if err:
            raise PeerUnavailable(err)
        notes.append(f"installed {' '.join(pkgs)}")
        version = _bcc_version(python)
    if version is None:
        raise PeerUnavailable(f"bcc not importable by {python} "
                              f"(apt-get install {BCC_APT.split('=')[0]})")
    if headers_override:
        headers = Path(headers_override)
        if not headers.is_dir():
            raise PeerUnavailable(f"{ENV_HEADERS}={headers}: no such directory")
    else:
        found = _installed_headers()
        if not found:
            raise PeerUnavailable(f"no kernel headers for bcc (apt-get install {HEADERS_PKG})")
        headers = found[0]
    tree = header_tree(headers, Path(os.environ.get(ENV_TREE, REPO / "build" / "bcc-kernel")))
    err = ensure_tracefs()
    if err:
        raise PeerUnavailable(err)
    return BccEnv(python=python, kernel_source=tree, headers=headers, bcc_version=version,
                  notes=notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    a = ap.parse_args(argv)
    try:
        env = prepare_bcc(install=not a.no_install)
    except PeerUnavailable as e:
        print(f"bcc peer unavailable: {e}", file=sys.stderr)
        return 2
    for n in env.notes:
        print(n)
    print(f"bcc {env.bcc_version} ({env.python}); BCC_KERNEL_SOURCE={env.kernel_source} "
          f"(from {env.headers.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
