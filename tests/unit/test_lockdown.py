"""Lockdown: securityfs parsing, the helper audit of the compiled objects, and
what `run` says under confidentiality (no root: the objects and the kernel's
BTF are read as files)."""

import struct

import pytest

from tracer import cli, lockdown, probe


@pytest.mark.parametrize(("text", "mode"), [
    ("[none] integrity confidentiality\n", "none"),
    ("none [integrity] confidentiality\n", "integrity"),
    ("none integrity [confidentiality]\n", "confidentiality"),
    ("", "unknown"),
    ("none integrity confidentiality\n", "unknown"),  # no brackets
    ("none [bogus] confidentiality\n", "unknown"),
])
def test_parse_mode(text, mode):
    assert lockdown.parse_mode(text) == mode


def test_read_mode_from_a_file(tmp_path):
    f = tmp_path / "lockdown"
    f.write_text("none [integrity] confidentiality\n")
    assert lockdown.read_mode(str(f)) == "integrity"
    assert lockdown.read_mode(str(tmp_path / "absent")) == "unknown"


def _insn(op, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", op, src << 4 | dst, off, imm)


def test_helper_calls_decodes_only_helper_calls():
    code = (_insn(0xB7, dst=1, imm=5)  # r1 = 5
            + _insn(0x85, imm=113)  # call bpf_probe_read_kernel
            + _insn(0x85, src=1, imm=7)  # bpf-to-bpf call: not a helper
            + _insn(0x85, src=2, imm=12345)  # kfunc call: not a helper
            + _insn(0x18, dst=1, src=1, imm=0x85) + _insn(0, imm=0)  # ld_imm64 map fd
            + _insn(0x85, imm=14)  # call bpf_get_current_pid_tgid
            + _insn(0x95))  # exit
    assert lockdown.helper_calls(code) == {113, 14}


# What each object calls, read from the built objects (make -C tracer/bpf).
# A change here is a change in what lockdown may take away: review it.
EXPECTED = {
    # get_current_task_btf: no lockdown reason gates it (its loads are direct
    # BTF loads, not bpf_probe_read_kernel)
    # bpf_loop, bpf_tail_call: the shared sys_exit program (no lockdown reason)
    # bpf_task_storage_get: per-thread syscall state (no lockdown reason)
    "sock": {"bpf_get_current_cgroup_id", "bpf_get_current_comm", "bpf_get_current_pid_tgid",
             "bpf_get_current_task_btf", "bpf_get_prandom_u32", "bpf_get_smp_processor_id",
             "bpf_get_stackid", "bpf_ktime_get_ns", "bpf_loop", "bpf_map_delete_elem",
             "bpf_map_lookup_elem", "bpf_map_update_elem", "bpf_probe_read_kernel",
             "bpf_probe_read_user", "bpf_ringbuf_output", "bpf_ringbuf_query", "bpf_tail_call",
             "bpf_task_storage_get"},
    "tls": {"bpf_get_attach_cookie", "bpf_get_current_cgroup_id", "bpf_get_current_comm",
            "bpf_get_current_pid_tgid", "bpf_ktime_get_ns", "bpf_map_delete_elem", "bpf_map_lookup_elem",
            "bpf_map_update_elem", "bpf_probe_read_user", "bpf_ringbuf_output",
            "bpf_ringbuf_query"},
    "inject": {"bpf_get_current_cgroup_id", "bpf_get_current_comm", "bpf_get_current_pid_tgid",
               "bpf_get_current_task", "bpf_get_prandom_u32", "bpf_get_socket_cookie",
               "bpf_ktime_get_ns", "bpf_loop", "bpf_map_delete_elem", "bpf_map_lookup_elem",
               "bpf_map_update_elem", "bpf_msg_pop_data", "bpf_msg_pull_data",
               "bpf_msg_push_data", "bpf_probe_read_kernel", "bpf_probe_read_user",
               "bpf_ringbuf_discard", "bpf_ringbuf_reserve", "bpf_ringbuf_submit",
               "bpf_sock_hash_update"},
}


@pytest.fixture(scope="module")
def audit():
    names = lockdown.kernel_helper_names()
    assert names, "no enum bpf_func_id in /sys/kernel/btf/vmlinux"
    a = lockdown.audit(names=names)
    missing = set(EXPECTED) - set(a.objects)
    assert not missing, f"objects not built ({missing}): run make -C tracer/bpf"
    return a


def test_audit_records_the_exact_helpers(audit):
    for obj, helpers in EXPECTED.items():
        got = audit.objects[obj]
        assert got == helpers, (f"{obj}.bpf.o now calls {sorted(got - helpers)} and no longer "
                                f"{sorted(helpers - got)}: check them against lockdown's lists "
                                "(tracer/lockdown.py), then update EXPECTED")
    assert audit.unnamed == {}


def test_no_object_calls_a_helper_integrity_forbids(audit):
    assert audit.violations("integrity") == {}
    assert audit.as_dict()["forbidden_by_integrity_used"] == []
    for helpers in audit.objects.values():  # every object, the ones of other features too
        assert "bpf_probe_write_user" not in helpers
        # not lockdown-gated, but it changes kernel behaviour (kprobe-only): never used
        assert "bpf_override_return" not in helpers


def test_confidentiality_takes_socket_identification(audit):
    v = audit.violations("confidentiality")
    assert v["sock"] == {"bpf_probe_read_kernel"}
    assert "tls" not in v  # user memory only
    lines = lockdown.consequences("confidentiality", audit)
    assert any(line.startswith("sock.bpf.o cannot load (bpf_probe_read_kernel forbidden): "
                               "no socket identification") for line in lines)
    assert lines[-1].startswith("tracefs is locked")
    msg = lockdown.refusal("confidentiality", audit)
    assert "\n" not in msg and msg.startswith("lockdown=confidentiality forbids")
    assert lockdown.refusal("integrity", audit) == ""
    assert lockdown.refusal("none", audit) == ""


def test_probe_decisions_from_the_audit(audit):
    res = probe.ProbeResult(kernel="x", lockdown="integrity", helper_audit=audit.as_dict())
    d = probe.decisions(res)
    assert d["lockdown=integrity"] == "no helper forbidden by integrity is used"
    assert d["lockdown=confidentiality"].startswith("would forbid kernel reads (")
    assert "sock.bpf.o calls bpf_probe_read_kernel" in d["lockdown=confidentiality"]


def test_run_under_confidentiality_exits_2_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(lockdown, "mode_here", lambda: "confidentiality")
    monkeypatch.setattr(probe, "require_environment", lambda: None)
    rc = cli.main(["run", "--duration", "1", "--output", str(tmp_path / "s.jsonl")])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("tracer: lockdown=confidentiality forbids "), err
    assert "boot with lockdown=integrity" in err[0]
