"""Run the fuzz targets under atheris (libFuzzer, coverage-guided).

    python -m tests.fuzz.run                       # every target, 10 min in all
    python -m tests.fuzz.run http1 hpack --seconds 300
    python -m tests.fuzz.run --runs 200            # a fixed number of inputs each

Each target runs in its own process (libFuzzer exits when done), one after
the other, at the given niceness. The corpus starts from the target's seeds
(real requests, frames and ring records, see targets.py) and is kept under
build/fuzz/<target>/corpus, so later runs start where earlier ones stopped.
A crash (an exception or a broken invariant) leaves its input in
build/fuzz/<target>/crash-*; turn it into a regression test with
`python -m tests.fuzz.run --keep build/fuzz/<target>/crash-... NAME`.
One JSON line per target goes to stdout (and to build/fuzz/summary.jsonl):
executions, exec/s, coverage (libFuzzer's cov/ft), corpus size, crashes.

Coverage guidance needs Python bytecode, so the guided run imports the
tracer's hot modules from source (TRACER_PURE=1, see tracer/core.py); then
the whole corpus is replayed once against the compiled core, so both forms
see every input found (`replayed_compiled`, crashes of either).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "build" / "fuzz"
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
NAMES = ("events", "http1", "http2", "hpack", "conn")
MAX_LEN = 16384


def child(name: str, args: list[str]) -> None:
    """In the fuzzing process: instrument the tracer, then hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["tracer"]):
        from tests.fuzz import targets
    fn = targets.TARGETS[name][0]
    atheris.Setup([sys.argv[0], *args], fn)
    atheris.Fuzz()


_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_STAT = re.compile(r"stat::(\w+):\s+(\d+)")


def run_one(name: str, seconds: int | None, runs: int | None, nice: int,
            workdir: Path = WORK) -> dict:
    from tests.fuzz import targets

    work = workdir / name
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in targets.TARGETS[name][1]():
        (corpus / ("seed-" + hashlib.sha1(seed).hexdigest()[:16])).write_bytes(seed)
    before = {p.name for p in work.glob("crash-*")}
    args = [str(corpus), f"-artifact_prefix={work}/", "-print_final_stats=1",
            f"-max_len={MAX_LEN}", "-timeout=20", "-rss_limit_mb=2048"]
    if seconds:
        args.append(f"-max_total_time={seconds}")
    if runs:
        args.append(f"-runs={runs}")
    cmd = [sys.executable, "-m", "tests.fuzz.run", "--child", name, "--", *args]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "TRACER_PURE": "1"},
                       preexec_fn=(lambda: os.nice(nice)) if nice else None)
    wall = time.monotonic() - t0
    # the corpus once through the compiled core (-runs=0: each input once)
    replay = subprocess.run([*cmd[:cmd.index("--") + 1], *args[:4], "-runs=0"], cwd=ROOT,
                            capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "TRACER_PURE"})
    log = p.stdout + p.stderr
    (work / "last.log").write_text(log + replay.stdout + replay.stderr)
    replayed = _STAT.findall(replay.stdout + replay.stderr)
    stats = {k: int(v) for k, v in _STAT.findall(log)}
    done = _DONE.findall(log)
    crashes = sorted({p.name for p in work.glob("crash-*")} - before)
    out = {
        "target": name,
        "seconds": round(wall, 1),
        "executions": stats.get("number_of_executed_units", 0),
        # libFuzzer's integer average reads 0 under a second: ours from the wall time
        "exec_per_s": round(stats.get("number_of_executed_units", 0) / wall),
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "cov": int(done[-1][1]) if done else None,
        "ft": int(done[-1][2]) if done else None,
        "corpus": len(list(corpus.iterdir())),
        "crashes": [str(work / c) for c in crashes],
        "replayed_compiled": dict((k, int(v)) for k, v in replayed).get(
            "number_of_executed_units", 0),
        "rc": p.returncode or replay.returncode,
    }
    if p.returncode and not crashes:
        out["error"] = log[-2000:]
    elif replay.returncode and not crashes:
        out["error"] = (replay.stdout + replay.stderr)[-2000:]
    return out


def keep(path: str, label: str) -> Path:
    """Copy a crashing input into tests/fuzz/regressions/<target>-<label>."""
    src = Path(path)
    target = src.parent.name
    dst = REGRESSIONS / f"{target}-{label}"
    dst.write_bytes(src.read_bytes())
    return dst


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", choices=[[], *NAMES], default=[],
                    metavar="TARGET", help=f"any of {', '.join(NAMES)} (default: all)")
    ap.add_argument("--seconds", type=int, default=None,
                    help="total time, shared equally by the targets (default 600)")
    ap.add_argument("--runs", type=int, default=None, help="inputs per target instead of time")
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--workdir", type=Path, default=WORK,
                    help="corpora, crashes and summary.jsonl (default build/fuzz)")
    ap.add_argument("--keep", nargs=2, metavar=("CRASH", "LABEL"),
                    help="copy a crash input into tests/fuzz/regressions")
    a = ap.parse_args(argv)
    if a.keep:
        print(keep(*a.keep))
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install -e '.[test]'", file=sys.stderr)
        return 2
    names = a.targets or list(NAMES)
    per = None if a.runs and not a.seconds else max((a.seconds or 600) // len(names), 1)
    a.workdir.mkdir(parents=True, exist_ok=True)
    failed = False
    with open(a.workdir / "summary.jsonl", "a") as summary:
        for name in names:
            res = run_one(name, per, a.runs, a.nice, a.workdir)
            line = json.dumps(res)
            print(line, flush=True)
            summary.write(line + "\n")
            failed |= bool(res["crashes"] or res["rc"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
