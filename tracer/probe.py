"""Kernel feature detection by trying, and the fallback decisions built on it.

Each feature is found by doing the thing: loading and attaching a trivial
program (tracer/bpf/probes/features.bpf.c), asking the kernel to create a map
or verify a helper (libbpf_probe_*), enabling bpf_stats. Version numbers are
never consulted: backports and lockdown make them meaningless.

Then each real object (sock, tls, inject, funcs, kfuncs) is loaded as the
tracer loads it (same rodata and maps, then closed): a program type the
kernel has can still be refused for a helper or a verifier limit, and a
feature is only reported available when its object loads. A refusal is one
line: the program and the verifier's last word (`refusal`).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import asdict, dataclass, field

from . import core, loader
from .loader import (  # noqa: F401 (bpf_loop, refusal, refusal_line: re-exported)
    BPF_PROG_TYPE_SK_MSG,
    BPF_PROG_TYPE_SOCK_OPS,
    BPF_PROG_TYPE_TRACEPOINT,
    BPF_FUNC_loop,
    bpf_loop,
    refusal,
    refusal_line,
)

BTF_PATH = "/sys/kernel/btf/vmlinux"
KFUNC_PROBE = "do_sys_openat2"  # any traceable kernel function: kfuncs.bpf.o is loaded for it
# the real objects, as features; each needs the ones before it that it names
OBJECTS = ("sock_object", "tls_object", "inject_object", "golang_object", "pyasync_object",
           "funcs_object", "kfuncs_object")

# uapi enum values (stable ABI)
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_MAP_TYPE_RINGBUF = 27
BPF_MAP_TYPE_SOCKHASH = 18
BPF_STATS_RUN_TIME = 0

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


@dataclass
class Feature:
    name: str
    available: bool
    detail: str = ""


@dataclass
class ProbeResult:
    kernel: str
    features: dict[str, Feature] = field(default_factory=dict)
    lockdown: str = "unknown"
    helper_audit: dict = field(default_factory=dict)  # tracer/lockdown.py Audit.as_dict()

    def ok(self, name: str) -> bool:
        f = self.features.get(name)
        return bool(f and f.available)

    def as_dict(self) -> dict:
        return {
            "kernel": self.kernel,
            "lockdown": self.lockdown,
            "helper_audit": self.helper_audit,
            "features": {k: asdict(v) for k, v in self.features.items()},
            "decisions": decisions(self),
        }


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_privileges() -> list[str]:
    """Capabilities the tracer needs and lacks (empty when all present)."""
    caps = effective_caps()
    missing = []
    if not caps >> CAP_SYS_ADMIN & 1:
        if not caps >> CAP_BPF & 1:
            missing.append("CAP_BPF")
        if not caps >> CAP_PERFMON & 1:
            missing.append("CAP_PERFMON")
    return missing


def btf_available() -> bool:
    return os.access(BTF_PATH, os.R_OK)


def lockdown_mode() -> str:
    """The bracketed mode of /sys/kernel/security/lockdown; securityfs is
    mounted if needed (it is not at boot on our machines)."""
    from . import lockdown

    return lockdown.mode_here()


def _try_program(prog: str, attach) -> Feature:
    """Load one program of the features object alone, then attach it."""
    try:
        with loader.BPFObject.open(loader.object_path("features")) as obj:
            for p in obj.programs:
                obj.set_autoload(p, p == prog)
            obj.load()
            attach(obj)
    except loader.LoadError as e:
        return Feature(prog, False, f"load: {loader._errno_msg(e.err)}")
    except loader.AttachError as e:
        return Feature(prog, False, f"attach: {loader._errno_msg(e.err)}")
    except loader.LoaderError as e:
        return Feature(prog, False, str(e))
    return Feature(prog, True, "loaded and attached")


def _libc_path() -> str:
    for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6",
              "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6", "/usr/lib/libc.so.6"):
        if os.path.exists(p):
            return p
    return "libc.so.6"


def _attach_uprobe(obj: loader.BPFObject) -> None:
    # Offset 0 on the ELF header: attaching does not need a real function, and
    # the probe never fires (the page is not executable code).
    obj.attach_uprobe("probe_uprobe", _libc_path(), 0, pid=os.getpid())


def _probe_type(kind: str, value: int, *extra) -> Feature:
    lib = loader.libbpf()
    fn = {"prog": lib.libbpf_probe_bpf_prog_type, "map": lib.libbpf_probe_bpf_map_type,
          "helper": lib.libbpf_probe_bpf_helper}[kind]
    ret = fn(value, *extra, None)
    if ret == 1:
        return Feature(kind, True, "accepted by the kernel")
    if ret == 0:
        return Feature(kind, False, "rejected by the kernel")
    return Feature(kind, False, f"probe failed: {loader._errno_msg(-ret)}")


def _bpf_stats() -> Feature:
    lib = loader.libbpf()
    fd = lib.bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd >= 0:
        os.close(fd)
        return Feature("bpf_stats", True, "BPF_ENABLE_STATS works")
    err = ctypes.get_errno() or -fd
    return Feature("bpf_stats", False, loader._errno_msg(err))


def _object_feature(name: str, load) -> Feature:
    """load() opens, configures and loads the real object, then closes it;
    its detail says how it loaded (or the kernel's reason it did not)."""
    try:
        detail = load() or "loaded as the tracer loads it"
    except loader.LoaderError as e:
        return Feature(name, False, refusal(e))
    except OSError as e:  # the object is not built
        return Feature(name, False, f"cannot read the object: {e}")
    return Feature(name, True, detail)


def _agent_defaults() -> tuple[int, int]:
    """(capture_bytes, ring_bytes) of a default `run`."""
    from . import sock

    return sock.DEFAULT_CAPTURE_BYTES, sock.DEFAULT_RING_BYTES


def _sock_opened() -> loader.BPFObject:
    """sock.bpf.o set up and loaded as tracer/sock.py SockKernel.start does."""
    from . import sock

    capture, ring = _agent_defaults()
    obj = loader.BPFObject.open(loader.object_path("sock"))
    try:
        obj.set_rodata(capture_bytes=capture, self_tgid=os.getpid(), wakeup_bytes=ring // 4)
        obj.set_max_entries("events", ring)
        obj.set_max_entries("user_stacks", 1)
        sock.load_sock(obj)
    except BaseException:
        obj.close()
        raise
    return obj


def object_features(feats: dict[str, Feature]) -> dict[str, Feature]:
    """Each real object loaded as it would run, then closed."""
    out: dict[str, Feature] = {}
    try:
        sock_obj = _sock_opened()
    except loader.LoaderError as e:
        sock_obj = None
        out["sock_object"] = Feature("sock_object", False, refusal(e))
    else:
        out["sock_object"] = Feature("sock_object", True, "loaded as the tracer loads it")
    try:
        out["tls_object"] = _object_feature("tls_object", lambda: _load_tls(sock_obj))
        out["inject_object"] = _object_feature("inject_object", lambda: _load_inject(sock_obj))
        out["golang_object"] = _object_feature("golang_object", lambda: _load_golang(sock_obj))
        out["pyasync_object"] = _object_feature("pyasync_object",
                                                lambda: _load_pyasync(sock_obj))
    finally:
        if sock_obj is not None:
            sock_obj.close()
    out["funcs_object"] = _object_feature("funcs_object", _load_funcs)
    out["kfuncs_object"] = _object_feature("kfuncs_object", lambda: _load_kfuncs(feats))
    return out


def _needs_sock(sock_obj) -> None:
    if sock_obj is None:
        raise loader.LoadError("not tried: it loads on sock.bpf.o's maps, which was refused")


def _load_tls(sock_obj) -> str:
    from . import tls

    _needs_sock(sock_obj)
    capture, ring = _agent_defaults()
    probes = tls.TlsProbes.load(sock_obj, capture_bytes=capture, wakeup_bytes=ring // 4,
                                self_tgid=os.getpid())
    mode = probes.mode
    probes.close()
    return f"loaded ({mode})"


def _load_inject(sock_obj) -> str:
    from . import inject

    _needs_sock(sock_obj)
    inj = inject.Injector.load(sock_obj, self_tgid=os.getpid())
    degraded = inj.degraded()
    inj.close()
    return f"loaded; {degraded}" if degraded else ""


def _load_golang(sock_obj) -> str:
    from . import golang

    _needs_sock(sock_obj)
    golang.GoProbes.load(sock_obj, self_tgid=os.getpid()).close()
    return ""


def _load_pyasync(sock_obj) -> str:
    from . import pyasync

    _needs_sock(sock_obj)
    pyasync.PyProbes.load(sock_obj, self_tgid=os.getpid()).close()
    return ""


def _load_funcs() -> str:
    from .funcs.tracer import FuncsTracer

    t = FuncsTracer([], None)
    try:
        t.start()
    finally:
        t.close()
    return ""


def _load_kfuncs(feats: dict[str, Feature]) -> str:
    from .funcs.kernel import KernelTracer, KFunc

    method, why = kernel_functions(feats)
    if method is None:
        raise loader.LoadError(f"not tried: {why}")
    t = KernelTracer([KFunc(KFUNC_PROBE)], method)
    try:
        t.start()
    finally:
        t.close()
    return f"loaded and attached ({method}, {KFUNC_PROBE})"


def probe() -> ProbeResult:
    res = ProbeResult(kernel=os.uname().release)
    f = res.features

    def put(name: str, feat: Feature):
        feat.name = name
        f[name] = feat

    put("btf", Feature("btf", btf_available(),
                       BTF_PATH if btf_available() else f"{BTF_PATH} missing"))
    tracefs = loader.ensure_tracefs()
    put("tracefs", Feature("tracefs", tracefs, "mounted" if tracefs else "cannot mount"))
    put("ringbuf", _probe_type("map", BPF_MAP_TYPE_RINGBUF))
    put("tracepoint_syscalls", _try_program("probe_tp_syscall",
                                            lambda o: o.attach("probe_tp_syscall")))
    put("tracepoint_sock", _try_program("probe_tp_sock", lambda o: o.attach("probe_tp_sock")))
    put("tracepoint_tcp", _try_program("probe_tp_tcp", lambda o: o.attach("probe_tp_tcp")))
    put("raw_tracepoint", _try_program("probe_raw_tp", lambda o: o.attach("probe_raw_tp")))
    put("kprobe", _try_program("probe_kprobe", lambda o: o.attach("probe_kprobe")))
    put("fentry", _try_program("probe_fentry", lambda o: o.attach("probe_fentry")))
    put("uprobe", _try_program("probe_uprobe", _attach_uprobe))
    put("uprobe_multi", Feature("uprobe_multi", *loader.uprobe_multi()))
    put("tc", _probe_type("prog", BPF_PROG_TYPE_SCHED_CLS))
    put("sockops", _probe_type("prog", BPF_PROG_TYPE_SOCK_OPS))
    put("sk_msg", _probe_type("prog", BPF_PROG_TYPE_SK_MSG))
    # libbpf_probe_bpf_helper reports "supported" for any load failure that is
    # not an unknown helper, so load a real caller instead.
    put("probe_write_user", _try_program("probe_write_user", lambda o: None))
    put("bpf_stats", _bpf_stats())
    put("bpf_loop", _probe_type("helper", BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_loop))
    for name, feat in object_features(f).items():
        put(name, feat)
    res.lockdown = lockdown_mode()
    from . import lockdown

    try:
        res.helper_audit = lockdown.audit().as_dict()
    except (OSError, ValueError) as e:  # objects not built, or not BPF ELF
        res.helper_audit = {"error": str(e)}
    return res


def decisions(res: ProbeResult) -> dict[str, str]:
    """What the tracer will use for each job, and the fallback it took."""
    d = {}
    sock_obj = res.features.get("sock_object")
    if sock_obj is not None and not sock_obj.available:
        d["socket capture"] = f"unavailable: sock.bpf.o refused ({sock_obj.detail})"
    elif res.ok("tracepoint_syscalls"):
        d["socket capture"] = "syscall tracepoints (sock.bpf.o)"
    elif res.ok("raw_tracepoint"):
        d["socket capture"] = "unavailable: syscall tracepoints missing (raw sys_enter not built yet)"
    else:
        d["socket capture"] = "unavailable: no syscall tracepoints"
    if res.ok("kprobe"):
        d["kprobes"] = "available, not needed (tracepoints are used everywhere)"
    else:
        d["kprobes"] = "absent: syscall tracepoints instead"
    if not res.ok("fentry"):
        d["fentry"] = "refused: syscall tracepoints instead"
    method, why = kernel_functions(res.features)
    kf = res.features.get("kfuncs_object")
    if method and kf is not None and not kf.available:
        method, why = None, f"kfuncs.bpf.o refused ({kf.detail})"
    d["kernel functions"] = why if method else f"unavailable: {why}"
    fo = res.features.get("funcs_object")
    if not res.ok("uprobe"):
        d["user functions"] = "unavailable: no uprobes"
    elif fo is not None and not fo.available:
        d["user functions"] = f"unavailable: funcs.bpf.o refused ({fo.detail})"
    else:
        d["user functions"] = "uprobes (funcs.bpf.o)"
    d["event transport"] = ("BPF ring buffer, batched wake-ups" if res.ok("ringbuf")
                            else "unavailable: needs BPF ring buffer (Linux 5.8+)")
    d["per-event core"] = core.info()["reason"]
    tls_obj = res.features.get("tls_object")
    if not res.ok("uprobe"):
        d["TLS plaintext"] = "unavailable: no uprobes (TLS connections count as unparsed)"
    elif tls_obj is not None and not tls_obj.available:
        d["TLS plaintext"] = (f"unavailable: tls.bpf.o refused ({tls_obj.detail}); "
                              "TLS connections count as unparsed")
    else:
        d["TLS plaintext"] = "OpenSSL uprobes (libssl by inode, static copies by symbol)"
    if res.ok("uprobe"):
        multi = res.features.get("uprobe_multi")
        d["TLS uprobes"] = ("uprobe_multi: an entry and a return link per library" if res.ok("uprobe_multi")
                            else f"per-function links ({multi.detail if multi else 'not probed'}):"
                            " stopping releases each")
    d["header injection"] = injection_decision(res.features)
    for name, job, how in (("golang", "Go goroutine causality",
                            "runtime uprobes (golang.bpf.o), on by default"),
                           ("pyasync", "asyncio task causality",
                            "interpreter uprobes (pyasync.bpf.o), with --asyncio")):
        obj = res.features.get(f"{name}_object")
        if not res.ok("uprobe"):
            d[job] = "unavailable: no uprobes (thread-level causality only)"
        elif obj is not None and not obj.available:
            d[job] = f"unavailable: {name}.bpf.o refused ({obj.detail}); thread-level causality only"
        else:
            d[job] = how
    if not res.ok("probe_write_user"):
        d["bpf_probe_write_user"] = f"refused (lockdown={res.lockdown}): not used"
    d.update(_lockdown_decisions(res))
    return d


def injection_decision(feats: dict[str, Feature]) -> str:
    """`run --inject`: sockops + sk_msg, only if inject.bpf.o itself loads."""
    missing = [n for n in ("sockops", "sk_msg") if not (n in feats and feats[n].available)]
    if missing:
        return f"unavailable: {' and '.join(missing)} refused by this kernel"
    obj = feats.get("inject_object")
    if obj is not None and not obj.available:
        return f"unavailable: inject.bpf.o refused ({obj.detail})"
    if obj is not None and obj.detail.startswith("loaded; "):
        return "sockops + sk_msg; " + obj.detail.removeprefix("loaded; ")
    return "sockops + sk_msg"


def _lockdown_decisions(res: ProbeResult) -> dict[str, str]:
    """From the helper audit of the objects (tracer/lockdown.py)."""
    a = res.helper_audit
    if not a or "error" in a:
        return {"helper audit": f"not done ({a.get('error', 'not run')})"} if a else {}
    bad = a["forbidden_by_integrity_used"]
    d = {"lockdown=integrity": ("no helper forbidden by integrity is used" if not bad
                                else "uses " + ", ".join(bad) + " (forbidden by integrity)")}
    conf = a["forbidden_by_confidentiality_used"]
    lost = "; ".join(f"{o}.bpf.o calls {', '.join(h)}" for o, h in conf.items())
    verdict = ("sock.bpf.o cannot load and tracefs is locked: `run` exits 2 saying so"
               if "sock" in conf else "tracefs is locked: tracepoints cannot attach")
    d["lockdown=confidentiality"] = (f"{'in force' if res.lockdown == 'confidentiality' else 'would'}"
                                     f" forbid kernel reads ({lost}): {verdict}")
    return d


def kernel_functions(feats: dict[str, Feature]) -> tuple[str | None, str]:
    """How `funcs kernel:NAME` traces: ("fentry" | "kprobe", why) or (None, the
    one-line reason neither works), from the "fentry" and "kprobe" features."""
    fentry, kprobe = feats.get("fentry"), feats.get("kprobe")
    if fentry and fentry.available:
        return "fentry", "fentry/fexit (BPF trampolines)"
    if kprobe and kprobe.available:
        return "kprobe", f"kprobe/kretprobe (fentry refused: {fentry.detail if fentry else '?'})"
    kdetail = kprobe.detail if kprobe else "not probed"
    if "ENOENT" in kdetail and not os.path.exists("/sys/bus/event_source/devices/kprobe"):
        kwhy = f"kprobes are not in this kernel (CONFIG_KPROBES off; {kdetail})"
    else:
        kwhy = f"kprobes fail ({kdetail})"
    fdetail = fentry.detail if fentry else "not probed"
    fwhy = (f"fentry is refused ({fdetail}; lockdown or a BPF LSM)" if "EPERM" in fdetail
            else f"fentry fails ({fdetail})")
    return None, f"{kwhy} and {fwhy}"


def probe_kernel_functions() -> tuple[str | None, str]:
    """kernel_functions() after probing only the two features it needs."""
    return kernel_functions({
        "kprobe": _try_program("probe_kprobe", lambda o: o.attach("probe_kprobe")),
        "fentry": _try_program("probe_fentry", lambda o: o.attach("probe_fentry"))})


def format_table(res: ProbeResult) -> str:
    rows = [f"kernel {res.kernel}, lockdown={res.lockdown}", ""]
    width = max(len(k) for k in res.features)
    for name, feat in res.features.items():
        mark = "yes" if feat.available else "no "
        rows.append(f"  {name:<{width}}  {mark}  {feat.detail}")
    rows.append("")
    rows.append("decisions:")
    for k, v in decisions(res).items():
        rows.append(f"  {k}: {v}")
    return "\n".join(rows)


def require_environment() -> None:
    """Raise EnvironmentProblem with a one-line message when tracing cannot work."""
    missing = missing_privileges()
    if missing:
        raise EnvironmentProblem(
            f"missing capability {' and '.join(missing)}: run as root, or grant it with "
            f"'setcap cap_bpf,cap_perfmon+ep' on the Python interpreter")
    if not btf_available():
        raise EnvironmentProblem(
            f"no kernel BTF ({BTF_PATH} missing): boot a kernel built with "
            "CONFIG_DEBUG_INFO_BTF=y")


class EnvironmentProblem(Exception):
    """The environment cannot run the tracer; str() is one actionable line."""


__all__ = ["probe", "decisions", "format_table", "require_environment", "EnvironmentProblem",
           "missing_privileges", "ProbeResult", "Feature"]
