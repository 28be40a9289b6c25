"""Kernel matrix: run the per-kernel entry point (harness.matrix_guest) on the host
and on other kernels booted with virtme-ng, then write one report row per kernel.

Kernel specs (comma-separated in `--kernels`):
  host                        the running kernel, natively, no VM;
  debian:<package>            a Debian kernel package; `*` stands for the ABI
                              number or point release (`debian:linux-image-6.1.0-*-cloud-amd64`,
                              `debian:linux-image-6.12.*-amd64`), the newest one
                              of its suite is fetched and unpacked: bullseye (5.10)
                              and trixie (6.12) through a private apt configuration
                              under the cache (the machine's sources untouched);
  <vmlinuz>[:<modules dir>]   any kernel image; without a modules dir, the
                              modules are looked up as virtme-ng does
                              (<root>/lib/modules/<version> next to <root>/boot).
A kernel that cannot be fetched, does not boot, times out or has no BTF becomes
a failed row with the reason; it never stops the other kernels.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from harness.matrix_guest import REPO, RESULT_SCHEMA

# The cloud flavour has no 9p (CONFIG_NET_9P unset), so virtme-ng cannot share the
# root file system with it unless virtiofsd is installed: rt is the second flavour.
DEFAULT_KERNELS = ("host,"
                   "debian:linux-image-5.10.0-*-amd64,debian:linux-image-5.10.0-*-rt-amd64,"
                   "debian:linux-image-5.10.0-*-cloud-amd64,"
                   "debian:linux-image-6.1.0-*-amd64,debian:linux-image-6.1.0-*-rt-amd64,"
                   "debian:linux-image-6.1.0-*-cloud-amd64,"
                   "debian:linux-image-6.12.*-amd64,"
                   # the host runs lockdown=integrity; this row shows the refusal
                   "debian:linux-image-6.1.0-*-amd64@lockdown=confidentiality")
# The Debian suite serving each kernel series. Only bookworm is in this
# machine's sources; every suite is fetched through a private apt
# configuration (tests and users alike), so what the matrix boots does not
# depend on the machine's apt setup.
SUITES = {"linux-image-5.10.": "bullseye", "linux-image-6.1.": "bookworm",
          "linux-image-6.12.": "trixie"}
DEBIAN_MIRROR = os.environ.get("MATRIX_DEBIAN_MIRROR", "http://deb.debian.org")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_LISTS_MAX_AGE_S = 86400.0
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "httptrace-matrix"
DEFAULT_TIMEOUT_S = 1800.0  # a TCG guest needs ~12 min for the tests and the bench smoke
# Features shown as columns, in this order; any others go to the details section.
FEATURES = ("btf", "kprobe", "fentry", "ringbuf", "tracepoint_syscalls", "uprobe",
            "tc", "sockops", "sk_msg", "probe_write_user", "bpf_stats",
            # the real objects, loaded as the tracer loads them (tracer/probe.py)
            "sock_object", "tls_object", "inject_object", "golang_object", "pyasync_object",
            "funcs_object", "kfuncs_object")
# The stress scenario offers 6000 req/s; an emulated guest cannot absorb that and
# the load generator overruns the runner's deadline (duration + 60 s).
TCG_BENCH_RPS = 300
# Attaching the tracer stalls an emulated guest for tens of seconds, eating into
# that same deadline: a longer run buys the slack.
TCG_BENCH_MIN_DURATION = 20.0
SHORT = {"tracepoint_syscalls": "tp_sys", "probe_write_user": "write_user",
         **{f"{o}_object": f"{o}.o" for o in ("sock", "tls", "inject", "golang", "pyasync",
                                            "funcs", "kfuncs")}}


class MatrixError(Exception):
    """Bad usage or a missing tool: the whole matrix cannot run (exit 2)."""


class KernelError(Exception):
    """One kernel cannot be run: its row carries this reason."""


@dataclass(frozen=True)
class KernelSpec:
    kind: str  # host | debian | path
    value: str = ""
    modules: str = ""
    append: str = ""  # kernel command-line arguments (`@lockdown=confidentiality`)

    @property
    def label(self) -> str:
        if self.kind == "host":
            return "host"
        if self.kind == "debian":
            base = self.value.removeprefix("linux-image-")
        else:
            base = Path(self.value).name
        return with_append(base, self.append)


def with_append(label: str, append: str) -> str:
    return f"{label}@{append}" if append else label


def parse_specs(text: str) -> list[KernelSpec]:
    specs = []
    for raw in (s.strip() for s in text.split(",")):
        if not raw:
            continue
        raw, _, append = raw.partition("@")
        if append and not re.fullmatch(r"[A-Za-z0-9_.=-]+( [A-Za-z0-9_.=-]+)*", append):
            raise MatrixError(f"bad kernel arguments {append!r}: words like lockdown=integrity")
        if append and raw == "host":
            raise MatrixError("host@...: the running kernel's command line cannot be changed")
        if raw == "host":
            specs.append(KernelSpec("host"))
        elif raw.startswith("debian:"):
            pkg = raw.removeprefix("debian:")
            if not re.fullmatch(r"linux-image-[A-Za-z0-9.+*-]+", pkg):
                raise MatrixError(f"bad kernel spec {raw!r}: expected "
                                  "debian:linux-image-<version>[-flavour]-<arch>")
            specs.append(KernelSpec("debian", pkg, append=append))
        elif "/" in raw or raw.startswith("path:"):
            img, _, mods = raw.removeprefix("path:").partition(":")
            specs.append(KernelSpec("path", img, mods, append))
        else:
            raise MatrixError(f"bad kernel spec {raw!r}: use host, debian:<package> "
                              "or a path to a vmlinuz[:modules dir]")
    if not specs:
        raise MatrixError("no kernels given: --kernels host,debian:<package>,<vmlinuz>")
    labels = [s.label for s in specs]
    dups = {x for x in labels if labels.count(x) > 1}
    if dups:
        raise MatrixError(f"kernel given twice: {', '.join(sorted(dups))}")
    return specs


# -- fetching kernels ---------------------------------------------------------------

def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def debian_candidates(pattern: str, names: list[str]) -> list[str]:
    """Package names matching pattern (`*` = the ABI number, or trixie's point
    release `57+deb13`), newest first."""
    rx = re.compile(re.escape(pattern).replace(r"\*", r"[0-9][0-9A-Za-z.+~]*") + r"\Z")
    return sorted((n for n in names if rx.match(n)), key=_natural, reverse=True)


def _check(cmd: list[str], timeout: float = 300, **kw) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise KernelError(f"{cmd[0]} timed out after {timeout:.0f} s") from e
    except OSError as e:
        raise KernelError(f"cannot run {cmd[0]}: {e.strerror}") from e
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise KernelError(f"{' '.join(cmd[:2])} failed: {last}")
    return r.stdout


def _unpacked(root: Path) -> tuple[Path, str] | None:
    imgs = sorted(root.glob("boot/vmlinuz-*"))
    if not imgs:
        return None
    return imgs[-1], imgs[-1].name.removeprefix("vmlinuz-")


def suite_of(pattern: str) -> str:
    for prefix, suite in SUITES.items():
        if pattern.startswith(prefix):
            return suite
    raise KernelError(f"{pattern}: no Debian suite known for it (known: "
                      f"{', '.join(p + '*' for p in SUITES)})")


def apt_sources(suite: str, mirror: str = DEBIAN_MIRROR) -> str:
    """One-line sources of a suite and its security updates (kernel ABI bumps
    land there first), signed by the Debian archive keyring."""
    opt = f"[signed-by={DEBIAN_KEYRING}]"
    return (f"deb {opt} {mirror}/debian {suite} main\n"
            f"deb {opt} {mirror}/debian {suite}-updates main\n"
            f"deb {opt} {mirror}/debian-security {suite}-security main\n")


def apt_options(root: Path) -> list[str]:
    """apt options that read and write only below root: its sources list, no
    sources.list.d, its own lists and package cache."""
    return ["-o", f"Dir::Etc::sourcelist={root / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-", "-o", f"Dir::State={root / 'state'}",
            "-o", f"Dir::Cache={root / 'cache'}", "-o", "APT::Get::List-Cleanup=0"]


def private_apt(suite: str, cache: Path = CACHE_DIR,
                max_age_s: float = APT_LISTS_MAX_AGE_S) -> list[str]:
    """apt options for suite's private configuration under the cache; its
    package lists are fetched when missing or older than max_age_s."""
    root = cache / "apt" / suite
    for d in ("state/lists/partial", "cache/archives/partial"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text(apt_sources(suite))
    opts = apt_options(root)
    stamp = root / "state" / "updated"
    if not stamp.exists() or time.time() - stamp.stat().st_mtime > max_age_s:
        _check(["apt-get", *opts, "-q", "update"], timeout=600)
        stamp.touch()
    return opts


def fetch_debian(pattern: str, cache: Path = CACHE_DIR) -> Path:
    """Download and unpack the newest matching package of its suite; return
    its vmlinuz. Without the registry, the newest one unpacked before."""
    prefix = pattern.split("*")[0]
    try:
        opts = private_apt(suite_of(pattern), cache)
        names = _check(["apt-cache", *opts, "pkgnames", prefix]).split()
    except KernelError:
        # offline: the newest kernel unpacked before, if any
        opts, names = [], [p.name for p in (cache / "debian").glob(prefix + "*")
                           if _unpacked(p / "root")]
        if not debian_candidates(pattern, names):
            raise
    candidates = debian_candidates(pattern, names)
    if not candidates:
        raise KernelError(f"no Debian package matches {pattern} in {suite_of(pattern)}")
    errors = []
    # the newest names may have no downloadable candidate (a security index
    # ahead of the pool): older ABIs are tried, a few quick 404s at most
    for pkg in candidates[:12]:
        root = cache / "debian" / pkg / "root"
        found = _unpacked(root)
        if found is None:
            dl = cache / "debian" / pkg / "deb"
            shutil.rmtree(dl, ignore_errors=True)
            dl.mkdir(parents=True)
            try:
                _check(["apt-get", *opts, "download", "-q", pkg], cwd=dl)
            except KernelError as e:
                errors.append(str(e))
                continue
            debs = list(dl.glob("*.deb"))
            shutil.rmtree(root, ignore_errors=True)
            _check(["dpkg-deb", "-x", str(debs[0]), str(root)])
            shutil.rmtree(dl)
            found = _unpacked(root)
            if found is None:
                raise KernelError(f"{pkg} holds no boot/vmlinuz-*")
        img, kver = found
        if (root / "usr/lib/modules").is_dir() and not (root / "lib").exists():
            # merged /usr (trixie): lib/modules is where depmod and virtme-ng look
            (root / "lib").symlink_to("usr/lib")
        if not (root / "lib/modules" / kver / "modules.dep").exists():
            # Debian generates modules.dep in postinst, which dpkg-deb -x skips.
            _check(["depmod", "-a", "-b", str(root), kver])
        return img
    raise KernelError(f"cannot download {pattern}: {'; '.join(errors)}")


def stage_path_kernel(spec: KernelSpec, cache: Path = CACHE_DIR) -> Path:
    """The image to boot; a separate modules dir is staged as <root>/lib/modules/<ver>
    (symlinks), the layout virtme-ng looks for."""
    img = Path(spec.value).expanduser().resolve()
    if not img.is_file():
        raise KernelError(f"kernel image not found: {spec.value}")
    if not spec.modules:
        return img
    mods = Path(spec.modules).expanduser().resolve()
    if not mods.is_dir():
        raise KernelError(f"modules directory not found: {spec.modules}")
    kver = mods.name
    root = cache / "staged" / re.sub(r"[^A-Za-z0-9._-]", "_", str(img)).strip("_")
    shutil.rmtree(root, ignore_errors=True)
    (root / "boot").mkdir(parents=True)
    (root / "lib/modules").mkdir(parents=True)
    staged = root / "boot" / f"vmlinuz-{kver}"
    staged.symlink_to(img)
    (root / "lib/modules" / kver).symlink_to(mods)
    return staged


# -- running one kernel -----------------------------------------------------------

@dataclass
class Row:
    label: str
    spec: str
    ok: bool = False
    reason: str = ""
    result: dict = field(default_factory=dict)
    wall_s: float = 0.0


def _guest_args(out: Path, label: str, virt: str, bench_duration: float,
                extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "harness.matrix_guest", str(out), "--label", label,
            "--virt", virt, "--bench-duration", str(bench_duration), *extra]


def root_share(img: Path) -> str:
    """'9p' or 'virtiofs': how the guest can mount the host's root file system.
    Decided from the kernel's config beside the image, before a boot that would
    only panic with "Failed to mount real root"."""
    configs = list(img.parent.glob("config-*"))
    if not configs or "CONFIG_NET_9P=" in configs[0].read_text(errors="replace"):
        return "9p"
    if shutil.which("virtiofsd") or Path("/usr/libexec/virtiofsd").exists():
        return "virtiofs"
    raise KernelError(f"{configs[0].name}: no 9p (CONFIG_NET_9P unset) and no virtiofsd "
                      "on this host: virtme-ng cannot share the root file system")


def vng_command(img: Path, out: Path, label: str, accel: str, bench_duration: float,
                extra: tuple[str, ...] = (), memory: str = "2G", cpus: int = 2,
                share: str = "9p", append: str = "") -> list[str]:
    inner = " ".join(shlex.quote(a)
                     for a in _guest_args(out, label, accel, bench_duration, extra))
    log = shlex.quote(str(out / "guest.log"))
    # -v: the kernel console goes to console.log, the only clue when a boot fails.
    cmd = [str(Path(sys.executable).parent / "vng"), "-v", "--run", str(img),
           "--memory", memory, "--cpus", str(cpus), "--rwdir", str(out),
           "--exec", f"cd {shlex.quote(str(REPO))} && {inner} >{log} 2>&1"]
    if append:
        cmd[4:4] = ["--append", append]
    if share == "9p":
        cmd.insert(4, "--force-9p")
    if accel == "tcg":
        cmd.insert(4, "--disable-kvm")
    return cmd


BOOT_FAILURES = re.compile(r"Oops: .*|Kernel panic.*|Failed to mount real root.*|initramfs does not "
                           r"have module fs-\S+|virtme-run: .*|qemu-system-\S+: .*|"
                           r"Unable to mount root fs.*")


def failure_line(console: str) -> str:
    """The most telling line of a failed boot's console, else its last line."""
    found = BOOT_FAILURES.findall(console)
    if found:
        return "; ".join(dict.fromkeys(f.strip() for f in found))[:300]
    lines = [ln for ln in console.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def _vng_env() -> dict:
    # vng calls virtme-run by name: the venv's bin must be on PATH even when the
    # venv is not activated.
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}


def _run_bounded(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int | None, str]:
    """(exit status or None on timeout, output tail); the whole process group dies
    on timeout so no qemu is left behind."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out[-20000:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        return None, (out or "")[-20000:]


def load_result(d: Path) -> dict:
    p = d / "result.json"
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
        raise KernelError(f"{p}: not a matrix result (schema {RESULT_SCHEMA})")
    return data


def unfinished_steps(result: dict) -> list[str]:
    """The steps the guest was asked for and did not finish (it stopped in
    the first of them: a panic, a hang killed by the timeout)."""
    done = result.get("timings_s") or {}
    return [s for s in result.get("steps") or [] if s not in done]


def judge(row: Row) -> Row:
    """Fill ok/reason from the result: no BTF, a failed probe or a failed test fails."""
    r = row.result
    probe = r.get("probe", {})
    feats = probe.get("data", {}).get("features", {})
    reasons = []
    if "btf" in feats and not feats["btf"].get("available"):
        reasons.append("no BTF (/sys/kernel/btf/vmlinux): CO-RE objects cannot load")
    elif "sock_object" in feats and not feats["sock_object"].get("available"):
        # nothing is traced there, whatever the tests that could run say
        reasons.append(f"sock.bpf.o refused: {feats['sock_object'].get('detail', '')}")
    if probe and not probe.get("data"):
        reasons.append(f"probe failed: {probe.get('error', 'no output')}")
    tests = r.get("tests", {})
    if tests.get("failed"):
        reasons.append(f"{tests['failed']} test(s) failed")
    elif tests and "passed" not in tests:
        reasons.append(f"tests did not run: {tests.get('error', '')}")
    if r and "probe" not in r:
        reasons.append("incomplete result: no probe step")
    unfinished = unfinished_steps(r) if r else []
    if unfinished and not row.reason:
        reasons.append(f"the guest stopped during its {unfinished[0]} step")
    row.ok = not reasons and not row.reason
    row.reason = "; ".join(filter(None, [row.reason, *reasons]))
    return row


def run_kernel(spec: KernelSpec, out: Path, timeout: float, accel: str,
               bench_duration: float, cache: Path = CACHE_DIR,
               extra: tuple[str, ...] = ()) -> Row:
    """One kernel end to end; every failure becomes the row's reason. `extra` goes
    to harness.matrix_guest (e.g. --steps probe,tests --tests NODEID)."""
    row = Row(spec.label, spec.value or spec.kind)
    t0 = time.monotonic()
    try:
        img = None
        if spec.kind == "debian":
            img = fetch_debian(spec.value, cache)
            # The resolved package names the row: linux-image-6.1.0-55-cloud-amd64.
            row.label = with_append(img.parent.parent.parent.name.removeprefix("linux-image-"),
                                    spec.append)
        elif spec.kind == "path":
            img = stage_path_kernel(spec, cache)
        # vng wants an absolute --rwdir, and a plain name (no glob characters).
        kdir = out.resolve() / "kernels" / re.sub(r"[^A-Za-z0-9._-]", "_", row.label)
        kdir.mkdir(parents=True, exist_ok=True)
        if img is None:
            cmd = _guest_args(kdir, row.label, "native", bench_duration, extra)
            env = None
        else:
            row.spec = str(img)
            if accel == "tcg" and "--bench-rps" not in extra:
                extra = ("--bench-rps", str(TCG_BENCH_RPS), *extra)
                bench_duration = max(bench_duration, TCG_BENCH_MIN_DURATION)
            cmd = vng_command(img, kdir, row.label, accel, bench_duration, extra,
                              share=root_share(img), append=spec.append)
            env = _vng_env()
        status, tail = _run_bounded(cmd, timeout, env)
        (kdir / "console.log").write_text(tail)
        # vng's own exit status is no verdict: it returns 255 after some clean
        # guest power-downs. What counts is the result.json that came back.
        if status is None:
            row.reason = f"timed out after {timeout:.0f} s"
        try:
            row.result = load_result(kdir)
        except FileNotFoundError:
            row.reason = row.reason or \
                f"no result came back (exit {status}, did not boot?): {failure_line(tail)}"
        except (ValueError, KernelError) as e:
            row.reason = row.reason or f"unreadable result: {e}"
        else:
            unfinished = unfinished_steps(row.result)
            if unfinished and not row.reason:
                row.reason = (f"the guest stopped during its {unfinished[0]} step: "
                              f"{failure_line(tail)}")
    except KernelError as e:
        row.reason = str(e)
    row.wall_s = round(time.monotonic() - t0, 1)
    return judge(row)


def collect(d: Path) -> list[Row]:
    """Rows from result.json files written elsewhere (Vagrant boxes, other machines)."""
    if not d.is_dir():
        raise MatrixError(f"--collect {d}: not a directory")
    rows = []
    for p in sorted(d.rglob("result.json")):
        row = Row(p.parent.name, f"collected: {p.parent}")
        try:
            row.result = load_result(p.parent)
            row.label = row.result.get("label") or row.label
            row.wall_s = row.result.get("timings_s", {}).get("total", 0.0)
        except (ValueError, KernelError) as e:
            row.reason = f"unreadable result: {e}"
        rows.append(judge(row))
    if not rows:
        raise MatrixError(f"--collect {d}: no result.json found below it")
    return rows


# -- report -----------------------------------------------------------------------

def _feature_cell(feats: dict, name: str) -> str:
    f = feats.get(name)
    if f is None:
        return "–"
    return "yes" if f.get("available") else "no"


def _fmt_rate(v, emulated: bool) -> str:
    if v is None:
        return "–"
    s = f"{v:,.0f}"
    return f"{s}*" if emulated else s


def _fallbacks(decisions: dict) -> str:
    """The probe's decisions about optional hooks, in a word each
    ('fentry: refused'); the full sentences go to the details section."""
    parts = [f"{k}: {re.split(r'[:(]', v)[0].strip()}" for k, v in decisions.items()
             if k in ("kprobes", "fentry", "bpf_probe_write_user") or v.startswith("unavailable")]
    return "; ".join(parts) or "–"


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    head = ["kernel", "release", "virt", "status", "lockdown",
            *(SHORT.get(f, f) for f in FEATURES), "socket capture", "fallbacks", "tests p/f/s",
            "events/s", "req/s", "time s"]
    body = []
    for row in rows:
        r = row.result
        data = r.get("probe", {}).get("data", {})
        feats = data.get("features", {})
        t = r.get("tests", {})
        b = r.get("bench", {})
        emulated = bool(r.get("emulated"))
        tests = f"{t['passed']}/{t['failed']}/{t['skipped']}" if "passed" in t else "–"
        body.append([
            row.label, r.get("kernel", "–"), r.get("virt", "–"),
            ("ok" if b.get("ok", True) else "ok (bench smoke failed: see details)")
            if row.ok else f"FAILED: {row.reason}",
            data.get("lockdown", "–"),
            *(_feature_cell(feats, f) for f in FEATURES),
            data.get("decisions", {}).get("socket capture", "–"),
            _fallbacks(data.get("decisions", {})), tests,
            _fmt_rate(b.get("events_per_s"), emulated),
            _fmt_rate(b.get("achieved_rps"), emulated), f"{row.wall_s:.0f}"])
    return head, body


def _details(rows: list[Row]) -> list[tuple[str, list[str]]]:
    out = []
    for row in rows:
        r = row.result
        lines = []
        data = r.get("probe", {}).get("data", {})
        for k, v in data.get("decisions", {}).items():
            lines.append(f"decision: {k}: {v}")
        for k, f in data.get("features", {}).items():
            if not f.get("available"):
                lines.append(f"unavailable: {k}: {f.get('detail', '')}")
        env = r.get("env", {})
        for k in ("netns", "bpftool", "tracefs"):
            if k in env and not env[k]:
                lines.append(f"guest lacks {k}: {env.get(k + '_error', '')}".rstrip(": "))
        for c in r.get("tests", {}).get("cases", []):
            if c["outcome"] != "passed":
                lines.append(f"test {c['outcome']}: {c['id']}: {c['message'][:160]}")
        b = r.get("bench", {})
        if b and not b.get("ok"):
            lines.append(f"bench: {b.get('skipped') or b.get('error', '')}")
        if r.get("timings_s"):
            lines.append("step times (s): " + ", ".join(f"{k} {v}"
                                                       for k, v in r["timings_s"].items()))
        if not row.ok:
            lines.append(f"reason: {row.reason}")
        out.append((row.label, lines))
    return out


NOTE = ("`*` marks timings measured inside an emulated (TCG) guest: "
        "emulated, not comparable with native rows. tests p/f/s = passed/failed/skipped "
        "of tests/kernel + tests/e2e/test_http1.py; events/s and req/s come from a "
        "short `harness bench --scenario stress` smoke (median of the traced runs; emulated "
        f"guests are offered {TCG_BENCH_RPS} req/s, native rows the scenario's 6000).")


def render_md(rows: list[Row], run_id: str) -> str:
    head, body = table(rows)
    esc = [[c.replace("|", "\\|") for c in line] for line in body]
    lines = [f"# Kernel matrix {run_id}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             *("| " + " | ".join(line) + " |" for line in esc), "", NOTE, ""]
    for label, det in _details(rows):
        lines += [f"## {label}", "", *(f"- {d}" for d in det), ""]
    return "\n".join(lines)


def render_html(rows: list[Row], run_id: str) -> str:
    head, body = table(rows)
    e = html.escape

    def cls(c: str) -> str:
        if c in ("yes", "ok"):
            return ' class="y"'
        if c == "no" or c.startswith("FAILED"):
            return ' class="n"'
        return ""

    trs = "\n".join("<tr>" + "".join(f"<td{cls(c)}>{e(c)}</td>" for c in line) + "</tr>"
                    for line in body)
    det = "\n".join(f"<h2>{e(label)}</h2><ul>" + "".join(f"<li>{e(d)}</li>" for d in lines)
                    + "</ul>" for label, lines in _details(rows))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Kernel matrix {e(run_id)}</title><style>
body{{font-family:sans-serif}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}
.y{{background:#dfd}} .n{{background:#fdd}}</style></head><body>
<h1>Kernel matrix {e(run_id)}</h1>
<table><tr>{"".join(f"<th>{e(h)}</th>" for h in head)}</tr>
{trs}</table><p>{e(NOTE)}</p>
{det}</body></html>
"""


def write_report(rows: list[Row], out: Path, run_id: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.md").write_text(render_md(rows, run_id))
    (out / "matrix.html").write_text(render_html(rows, run_id))
    (out / "matrix.json").write_text(json.dumps(
        [{"label": r.label, "spec": r.spec, "ok": r.ok, "reason": r.reason,
          "wall_s": r.wall_s, "result": r.result} for r in rows], indent=1))
    return out / "matrix.md"


# -- the whole matrix -------------------------------------------------------------

def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() % 0xffff:04x}"


def preflight(specs: list[KernelSpec]) -> None:
    if any(s.kind != "host" for s in specs):
        vng = Path(sys.executable).parent / "vng"
        if not vng.exists():
            raise MatrixError("virtme-ng not installed: run `make matrix-deps` "
                              "(or .venv/bin/pip install virtme-ng)")
        missing = [t for t in ("qemu-system-x86_64", "busybox") if not shutil.which(t)]
        if any(s.kind == "debian" for s in specs):
            missing += [t for t in ("apt-get", "dpkg-deb", "depmod") if not shutil.which(t)]
        if missing:
            raise MatrixError(f"missing {', '.join(missing)}: run `make matrix-deps`")


def run_matrix(specs: list[KernelSpec], out_root: Path, collect_dir: Path | None = None,
               timeout: float = DEFAULT_TIMEOUT_S, accel: str = "tcg",
               bench_duration: float = 2.0, progress=None,
               cache: Path = CACHE_DIR) -> tuple[list[Row], Path]:
    """Run every kernel (sequentially: each TCG guest wants both cores), then report."""
    preflight(specs)
    if collect_dir is not None and not collect_dir.is_dir():
        raise MatrixError(f"--collect {collect_dir}: not a directory")
    run_id = new_run_id()
    out = out_root / run_id
    rows = []
    for spec in specs:
        if progress:
            progress(f"{spec.label}: running")
        row = run_kernel(spec, out, timeout, accel, bench_duration, cache)
        if progress:
            progress(f"{spec.label}: {'ok' if row.ok else 'FAILED: ' + row.reason} "
                     f"({row.wall_s:.0f} s)")
        rows.append(row)
    if collect_dir is not None:
        rows += collect(collect_dir)
    return rows, write_report(rows, out, run_id)
