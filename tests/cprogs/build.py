"""Build the C test programs of tests/cprogs with gcc, at test time.

    build(variant, outdir) -> Path

Variants (gcc defaults otherwise, so PIE):
- "fp":            -O1 -g -fno-omit-frame-pointer -fno-inline
- "nofp":          -O2 -g -fomit-frame-pointer (no frame pointers, .eh_frame kept)
- "stripped":      "nofp", then strip --strip-all, plus a MiniDebugInfo
                   .gnu_debugdata section (xz-compressed ELF with a .symtab of the
                   function symbols that .dynsym lacks: the Fedora recipe)
- "stripped-bare": "nofp", then strip --strip-all; no .gnu_debugdata
- "debugframe":    "nofp" with -fno-asynchronous-unwind-tables: the CFI of
                   target.c's functions is in .debug_frame only (crt code keeps
                   its .eh_frame)
- "split":         "nofp", its symbols and DWARF moved to a separate debug file
                   (objcopy --only-keep-debug, as distributions' -dbgsym and
                   -debuginfo packages do), then strip --strip-all and a
                   .gnu_debuglink to it named debuglink_name(source); the
                   debug file is written beside the binary as
                   debug_file_of(binary)
- "split-fp":      "split" of the "fp" build (frame pointers: for stacks the
                   kernel walks, as --span-stacks takes them)
- "split-debugframe": "split" of the "debugframe" build (the CFI of the
                   program's functions only in the debug file's .debug_frame)

Outputs are cached in outdir by a hash of the source, this file and the
variant; a finished binary is renamed into place, so concurrent builds are safe.
Raises BuildError (one line) when a tool is missing or fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "fp": ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline"],
    "nofp": ["-O2", "-g", "-fomit-frame-pointer"],
    "stripped": ["-O2", "-g", "-fomit-frame-pointer"],
    "stripped-bare": ["-O2", "-g", "-fomit-frame-pointer"],
    # not in the shared interface: CFI of our functions only in .debug_frame
    "debugframe": ["-O2", "-g", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables"],
    "split": ["-O2", "-g", "-fomit-frame-pointer"],
    "split-fp": ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline"],
    "split-debugframe": ["-O2", "-g", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables"],
}
TOOLS = ("gcc", "strip", "objcopy", "nm", "xz")


class BuildError(RuntimeError):
    pass


def missing_tools(variant: str = "stripped") -> list[str]:
    """Tools the variant needs that are not on PATH (tests skip naming them)."""
    need = ("gcc",) if variant in ("fp", "nofp") else TOOLS
    return [t for t in need if shutil.which(t) is None]


def build(variant: str, outdir, source: str = "target.c") -> Path:
    if variant not in VARIANTS:
        raise BuildError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    missing = missing_tools(variant)
    if missing:
        raise BuildError(f"cannot build {source} ({variant}): missing {', '.join(missing)}")
    src = HERE / source
    digest = hashlib.sha256(src.read_bytes() + Path(__file__).read_bytes()
                            + variant.encode()).hexdigest()[:12]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    out = outdir / f"{src.stem}-{variant}-{digest}"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=outdir, prefix=".build-") as tmp:
        tmp = Path(tmp)
        exe = tmp / "a.out"
        _run(["gcc", *VARIANTS[variant], "-o", str(exe), str(src)])
        if variant == "stripped":
            _add_minidebuginfo(exe, tmp)
        elif variant == "stripped-bare":
            _run(["strip", "--strip-all", str(exe)])
        elif variant.startswith("split"):
            # the debug file first: the binary in place means both are
            os.replace(_split_debug(exe, tmp, debuglink_name(source)), debug_file_of(out))
        os.replace(exe, out)
    return out


def _add_minidebuginfo(exe: Path, tmp: Path) -> None:
    """The Fedora MiniDebugInfo recipe (find-debuginfo.sh add_minidebug)."""
    dynsyms = set(_nm(exe, "-D"))
    funcsyms = set(_nm(exe, None, kinds=("T", "t")))
    keep = tmp / "keep_symbols"
    keep.write_text("".join(f"{s}\n" for s in sorted(funcsyms - dynsyms)))
    debug, mini = tmp / "debug", tmp / "mini_debuginfo"
    _run(["objcopy", "--only-keep-debug", str(exe), str(debug)])
    _run(["objcopy", "-S", "--remove-section", ".gdb_index", "--remove-section", ".comment",
          f"--keep-symbols={keep}", str(debug), str(mini)])
    _run(["strip", "--strip-all", "--remove-section", ".comment", str(exe)])
    _run(["xz", "--keep", "--force", str(mini)])
    _run(["objcopy", "--add-section", f".gnu_debugdata={mini}.xz", str(exe)])


def debuglink_name(source: str = "target.c") -> str:
    """The file name a "split" build's .gnu_debuglink records."""
    return f"{Path(source).stem}.debug"


def debug_file_of(binary) -> Path:
    """Where build() left a "split" binary's debug file."""
    return Path(f"{binary}.debug")


def _split_debug(exe: Path, tmp: Path, name: str) -> Path:
    """The separate debug file recipe (debhelper's dh_strip, Fedora's
    find-debuginfo): keep the debug sections aside, strip, link to them."""
    debug = tmp / name
    _run(["objcopy", "--only-keep-debug", str(exe), str(debug)])
    _run(["strip", "--strip-all", str(exe)])
    _run(["objcopy", f"--add-gnu-debuglink={debug}", str(exe)])
    return debug


def _nm(exe: Path, flag: str | None, kinds: tuple[str, ...] | None = None) -> list[str]:
    cmd = ["nm", "--format=posix", "--defined-only"] + ([flag] if flag else []) + [str(exe)]
    names = []
    for line in _run(cmd).splitlines():
        parts = line.split()
        if len(parts) >= 2 and (kinds is None or parts[1] in kinds):
            names.append(parts[0])
    return names


def _run(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError(f"{cmd[0]} failed: {e}") from None
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or ["?"])[-1]
        raise BuildError(f"{' '.join(cmd[:2])} ... exited {p.returncode}: {err}")
    return p.stdout


if __name__ == "__main__":
    import sys

    for v in sys.argv[2:] or VARIANTS:
        print(build(v, sys.argv[1] if len(sys.argv) > 1 else "build/cprogs"))
