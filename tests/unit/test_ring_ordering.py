"""The ring consumer shares two positions and the record headers with the
kernel's producer. Compiled, it must read them with acquire loads and give
slots back with a release store (as libbpf does): a plain store is correct
only on x86, where every store is a release. On x86 both compile to a plain
`mov`, so the machine code cannot tell; the C that Cython generates from
tracer/ring.py and ring.pxd (what the extension is built from) can."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PFX = "__pyx_f_6tracer_4ring_"


def generated_c(tmp: Path, root: Path = REPO) -> str:
    """ring.c as cythonize left it beside the extension when it is current,
    else generated afresh (the same Cython, no C compiler needed)."""
    src = [root / "tracer" / "ring.py", root / "tracer" / "ring.pxd"]
    built = root / "tracer" / "ring.c"
    if built.exists() and all(built.stat().st_mtime >= s.stat().st_mtime for s in src):
        text = built.read_text()
    else:
        out = tmp / "ring.c"
        subprocess.run([sys.executable, "-m", "cython", "-3", "tracer/ring.py", "-o", str(out)],
                       cwd=root, check=True, capture_output=True, timeout=120)
        text = out.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # Cython quotes the .py in comments
    return re.sub(r"//[^\n]*", "", text)


def body(c: str, name: str) -> str:
    """The body of the C function `name` (its definition, not a prototype)."""
    m = re.search(rf"\b{re.escape(name)}\([^;{{]*\)\s*\{{", c)
    assert m, f"{name} not defined"
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(c[i], 0)
        i += 1
    return c[m.end():i - 1]


def ordering_problems(c: str) -> list[str]:
    problems = []
    for helper, op, order in (("_ring_load64_acquire", "__atomic_load_n", "__ATOMIC_ACQUIRE"),
                              ("_ring_load32_acquire", "__atomic_load_n", "__ATOMIC_ACQUIRE"),
                              ("_ring_store64_release", "__atomic_store_n", "__ATOMIC_RELEASE")):
        b = body(c, helper)
        if op not in b or order not in b:
            problems.append(f"{helper} is not {op}(..., {order})")
    for fn, helper in (("_load64", "_ring_load64_acquire"), ("_load32", "_ring_load32_acquire"),
                       ("_store64", "_ring_store64_release")):
        if f"{helper}(" not in body(c, PFX + fn):
            problems.append(f"{fn} does not call {helper}")
    drain = body(c, PFX + "10RingBuffer__drain")
    for need in (f"{PFX}_store64(__pyx_v_cp, 0,", f"{PFX}_load64(__pyx_v_pp, 0)",
                 f"{PFX}_load32(__pyx_v_pp,", f"{PFX}_load64(__pyx_v_cp, 0)"):
        if need not in drain:
            problems.append(f"_drain lacks {need}")
    # the positions and headers are touched through the helpers only (and
    # the payload copied once its header was acquired)
    rest = re.sub(rf"{PFX}_(?:load64|load32|store64|copy)\(__pyx_v_[cp]p\b", "", drain)
    rest = re.sub(r"(?:unsigned char (?:const )?\*)?__pyx_v_[cp]p(?: = __pyx_t_\d+)?;", "", rest)
    for ptr in ("cp", "pp"):
        if f"__pyx_v_{ptr}" in rest:
            problems.append(f"_drain touches __pyx_v_{ptr} other than through the helpers")
    return problems


def test_compiled_ring_acquires_positions_and_releases_slots(tmp_path):
    assert ordering_problems(generated_c(tmp_path)) == []
