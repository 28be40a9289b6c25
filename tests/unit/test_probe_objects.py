"""The probe's decisions about the real objects (no root): a feature whose
object the kernel refuses is reported unavailable with the verifier's reason
in one line, even when its program types are there (Debian 6.1: inject.bpf.o
refused, sockops and sk_msg present)."""

from __future__ import annotations

import pytest

from tracer import inject, loader, probe
from tracer.probe import Feature, ProbeResult

# The end of libbpf's log when Debian 6.1.0-57 refused inject.bpf.o (matrix guest).
LOG_61 = """libbpf: prog 'inject_msg': relo #13: patched insn #529 (LDX/ST/STX) off 0 -> 0
libbpf: prog 'inject_msg': BPF program load failed: Invalid argument
libbpf: prog 'inject_msg': -- BEGIN PROG LOAD LOG --
0: R1=ctx(off=0,imm=0) R10=fp0
; bpf_get_current_comm(comm, sizeof(comm));
73: (b7) r2 = 16                      ; R2_w=16
74: (85) call bpf_get_current_comm#16
unknown func bpf_get_current_comm#16
processed 71 insns (limit 1000000) max_states_per_insn 0 total_states 6 peak_states 6 mark_read 3
-- END PROG LOAD LOG --
libbpf: prog 'inject_msg': failed to load: -22
libbpf: failed to load object '/work/main/tracer/bpf/build/inject.bpf.o'
"""


def test_refusal_names_the_program_and_the_verifiers_reason():
    e = loader.LoadError("kernel refused inject.bpf.o (EINVAL: Invalid argument)", err=22,
                         log_text=LOG_61)
    assert probe.refusal(e) == ("inject_msg: unknown func bpf_get_current_comm#16 "
                                "(EINVAL: Invalid argument)")
    # no verifier log (e.g. a map the kernel refused): the loader's own line
    bare = loader.LoadError("kernel refused x.bpf.o (E2BIG: Argument list too long)", err=7,
                            log_text="libbpf: map 'm': failed to create: -7\n")
    assert probe.refusal(bare) == "kernel refused x.bpf.o (E2BIG: Argument list too long)"


def test_a_helper_the_kernel_does_not_know_is_named_from_the_build():
    # Debian 5.10 refusing sock.bpf.o (matrix guest): the kernel has no name for it
    log = LOG_61.replace("inject_msg", "tp_exit_accept").replace(
        "unknown func bpf_get_current_comm#16", "invalid func unknown#158")
    assert probe.refusal_line("x", log) == (
        "tp_exit_accept: invalid func bpf_get_current_task_btf#158 "
        "(the kernel lacks this helper)")


def test_refused_helper_is_read_from_the_log():
    assert inject.refused_helper(LOG_61) == "bpf_get_current_comm"
    assert inject.refused_helper("R1 invalid mem access 'scalar'\n") == ""
    # Debian 6.12 (trixie) words it differently
    assert inject.refused_helper("74: (85) call bpf_get_current_comm#16\nprogram of this type "
                                 "cannot use helper bpf_get_current_comm#16\n") == \
        "bpf_get_current_comm"


def _res(**objects: Feature) -> ProbeResult:
    res = ProbeResult(kernel="6.1.0-57-amd64", lockdown="none")
    for name in ("btf", "ringbuf", "tracepoint_syscalls", "uprobe", "uprobe_multi",
                 "sockops", "sk_msg", "fentry"):
        res.features[name] = Feature(name, True, "ok")
    res.features["kprobe"] = Feature("kprobe", False, "attach: ENOENT")
    res.features.update(objects)
    return res


REFUSED = "inject_msg: unknown func bpf_get_current_comm#16 (EINVAL: Invalid argument)"


def test_injection_is_unavailable_when_its_object_is_refused():
    res = _res(inject_object=Feature("inject_object", False, REFUSED))
    assert probe.decisions(res)["header injection"] == \
        f"unavailable: inject.bpf.o refused ({REFUSED})"
    ok = _res(inject_object=Feature("inject_object", True, "loaded as the tracer loads it"))
    assert probe.decisions(ok)["header injection"] == "sockops + sk_msg"
    no_msg = _res(sk_msg=Feature("sk_msg", False, "rejected by the kernel"))
    assert probe.decisions(no_msg)["header injection"] == \
        "unavailable: sk_msg refused by this kernel"


def test_injection_loaded_without_a_helper_says_what_is_lost():
    inj = inject.Injector(None, ("bpf_get_current_comm",))
    detail = f"loaded; {inj.degraded()}"
    res = _res(inject_object=Feature("inject_object", True, detail))
    assert probe.decisions(res)["header injection"] == (
        "sockops + sk_msg; sk_msg lacks bpf_get_current_comm on this kernel: with --comm on,"
        " requests are sent without traceparent (counted: unfiltered)")


@pytest.mark.parametrize("obj,key,want", [
    ("sock_object", "socket capture", "unavailable: sock.bpf.o refused (io_exit: x)"),
    ("tls_object", "TLS plaintext",
     "unavailable: tls.bpf.o refused (io_exit: x); TLS connections count as unparsed"),
    ("funcs_object", "user functions", "unavailable: funcs.bpf.o refused (io_exit: x)"),
    ("kfuncs_object", "kernel functions", "unavailable: kfuncs.bpf.o refused (io_exit: x)"),
    ("golang_object", "Go goroutine causality",
     "unavailable: golang.bpf.o refused (io_exit: x); thread-level causality only"),
    ("pyasync_object", "asyncio task causality",
     "unavailable: pyasync.bpf.o refused (io_exit: x); thread-level causality only"),
])
def test_each_refused_object_turns_its_feature_off(obj, key, want):
    assert probe.decisions(_res(**{obj: Feature(obj, False, "io_exit: x")}))[key] == want
    # loaded: the feature is on (fentry here, so kernel functions use it)
    on = probe.decisions(_res(**{obj: Feature(obj, True, "loaded")}))[key]
    assert not on.startswith("unavailable"), on


def test_objects_needing_sock_are_not_tried_without_it(monkeypatch):
    def refused():
        raise loader.LoadError("kernel refused sock.bpf.o (EINVAL: Invalid argument)",
                               err=22, log_text=LOG_61.replace("inject_msg", "io_exit"))

    monkeypatch.setattr(probe, "_sock_opened", refused)
    monkeypatch.setattr(probe, "_load_funcs", lambda: "")
    feats = {"kprobe": Feature("kprobe", False, "attach: ENOENT"),
             "fentry": Feature("fentry", False, "load: EPERM")}
    got = probe.object_features(feats)
    assert list(got) == list(probe.OBJECTS)
    assert got["sock_object"].detail == \
        "io_exit: unknown func bpf_get_current_comm#16 (EINVAL: Invalid argument)"
    for name in ("tls_object", "inject_object", "golang_object", "pyasync_object"):
        assert not got[name].available
        assert got[name].detail.startswith("not tried: it loads on sock.bpf.o's maps")
    assert got["funcs_object"].available
    assert not got["kfuncs_object"].available
    assert got["kfuncs_object"].detail.startswith("not tried: kprobes ")


def test_loading_without_a_helper_is_silent_so_probe_json_stays_clean(monkeypatch, caplog):
    """`tracer probe --json` loads the injector too: what is lost goes to the
    feature's detail, the warning line only to `run --inject`."""
    seen = []

    def like_61(name, sock, maps, configure=None, **rodata):
        seen.append(rodata.get("msg_comm", 1))
        if rodata.get("msg_comm", 1):
            raise loader.LoadError("kernel refused inject.bpf.o (EINVAL: Invalid argument)",
                                   err=22, log_text=LOG_61)
        return "obj"

    monkeypatch.setattr(loader.BPFObject, "load_on", like_61)
    inj = inject.Injector.load("sock", self_tgid=1)
    assert (seen, inj.obj, inj.lost) == ([1, 0], "obj", ("bpf_get_current_comm",))
    assert caplog.records == []
    # a refusal that names no helper this code can do without is re-raised
    monkeypatch.setattr(loader.BPFObject, "load_on", lambda *a, **k: (_ for _ in ()).throw(
        loader.LoadError("kernel refused inject.bpf.o", err=22, log_text="R1 invalid mem\n")))
    with pytest.raises(loader.LoadError):
        inject.Injector.load("sock", self_tgid=1)
