"""The capability-set computation and /proc status parsing (no root)."""

import pytest

from tracer import privileges as P
from tracer.privileges import KernelNeeds

STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
Uid:\t65534\t65534\t65534\t65534
Gid:\t65534\t65534\t65534\t65534
CapInh:\t0000000000000000
CapPrm:\t0000000000280004
CapEff:\t0000000000280004
CapBnd:\t0000000000280004
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t0
"""


def test_parse_status():
    st = P.parse_status(STATUS)
    assert st["Uid"] == [65534] * 4
    assert st["NoNewPrivs"] == 1
    assert st["CapInh"] == st["CapAmb"] == 0
    assert P.names(st["CapEff"]) == ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]


def test_numbers_are_the_uapi_ones():
    # spot checks against include/uapi/linux/capability.h
    assert (P.CAP_NUMBERS["CAP_DAC_READ_SEARCH"], P.CAP_NUMBERS["CAP_SYS_PTRACE"],
            P.CAP_NUMBERS["CAP_SYS_ADMIN"], P.CAP_NUMBERS["CAP_PERFMON"],
            P.CAP_NUMBERS["CAP_BPF"], P.CAP_NUMBERS["CAP_CHECKPOINT_RESTORE"]) == \
        (2, 19, 21, 38, 39, 40)
    assert sorted(P.CAP_NUMBERS.values()) == list(range(41))
    assert P.mask(P.names(0x1FFFFFFFFFF)) == 0x1FFFFFFFFFF


@pytest.mark.parametrize(("kw", "kernel", "want"), [
    ({"tls_discovery": False}, KernelNeeds(), []),
    ({"tls_discovery": True}, KernelNeeds(),  # 6.18: uprobes need CAP_SYS_ADMIN
     ["CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]),
    ({"tls_discovery": True}, KernelNeeds(uprobe="CAP_PERFMON"),  # older kernels
     ["CAP_DAC_READ_SEARCH", "CAP_PERFMON", "CAP_SYS_PTRACE"]),
    ({"tls_discovery": False, "exe_names": True}, KernelNeeds(), ["CAP_SYS_PTRACE"]),
    ({"tls_discovery": False, "span_stacks": True}, KernelNeeds(),
     ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]),
    ({"tls_discovery": False}, KernelNeeds(bpf_cmds=True), ["CAP_BPF"]),
])
def test_runtime_caps(kw, kernel, want):
    got = P.runtime_caps(kernel=kernel, **kw)
    assert sorted(got) == want
    assert all(why for why in got.values())  # every kept capability says why


def test_start_caps_per_command_line():
    assert P.start_caps() == ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE",
                              "CAP_DAC_READ_SEARCH", "CAP_SETPCAP"]
    assert "CAP_NET_ADMIN" in P.start_caps(inject=True)
    assert {"CAP_SETUID", "CAP_SETGID"} <= set(P.start_caps(user=True))
    assert set(P.start_caps(inject=True, user=True)) == set(P.START)


def test_runtime_is_within_start():
    """Nothing is kept that start-up did not hold (a deployment grants START)."""
    for kernel in (KernelNeeds(), KernelNeeds(uprobe="CAP_PERFMON", bpf_cmds=True)):
        kept = P.runtime_caps(tls_discovery=True, exe_names=True, span_stacks=True,
                              kernel=kernel)
        assert set(kept) <= set(P.START)


def test_describe():
    res = P.DropResult(kept={"CAP_SYS_PTRACE": "x"}, user="nobody")
    assert P.describe(res) == ("privileges dropped: kept CAP_SYS_PTRACE; no_new_privs; "
                               "running as nobody")
    assert P.describe(P.DropResult(kept={})) == "privileges dropped: kept none; no_new_privs"


def test_unknown_user_is_one_line():
    with pytest.raises(ValueError, match=r"^--user no-such-user-h5: no such user"):
        P.check_user("no-such-user-h5")


def test_broker_holds_what_the_agent_no_longer_does():
    """Split: the agent keeps nothing for TLS discovery, exe names or span
    stacks (only CAP_BPF where every bpf() command is checked); the broker
    keeps what those need."""
    for kernel in (KernelNeeds(), KernelNeeds(uprobe="CAP_PERFMON", bpf_cmds=True)):
        agent = P.runtime_caps(tls_discovery=False, kernel=kernel)
        assert sorted(agent) == (["CAP_BPF"] if kernel.bpf_cmds else [])
    assert sorted(P.broker_caps(tls_discovery=False, exe_names=True)) == ["CAP_SYS_PTRACE"]
    assert sorted(P.broker_caps(tls_discovery=False, span_stacks=True)) == \
        ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]
    assert sorted(P.broker_caps(tls_discovery=True)) == \
        ["CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]
    # map lookups (the filter maps, to check a pid) only for exe names and stacks
    old = KernelNeeds(uprobe="CAP_PERFMON", bpf_cmds=True)
    assert "CAP_BPF" not in P.broker_caps(tls_discovery=True, kernel=old)
    assert "CAP_BPF" in P.broker_caps(tls_discovery=True, span_stacks=True, kernel=old)


def test_default_user(monkeypatch):
    monkeypatch.setattr(P.os, "geteuid", lambda: 0)
    assert P.default_user() == ("nobody" if _has("nobody") else None)
    monkeypatch.setattr(P.os, "geteuid", lambda: 1000)
    assert P.default_user() is None  # not root: stays who it is


def _has(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_dir_writable_by_mode_bits(tmp_path):
    d = tmp_path / "a" / "b"
    d.mkdir(parents=True)
    st = d.stat()
    other = st.st_uid + 12345
    (tmp_path / "a").chmod(0o755)
    d.chmod(0o777)
    tmp_path.chmod(0o755)
    parents_open = all(p.stat().st_mode & 0o001 for p in tmp_path.parents)
    assert P.dir_writable_by(str(d), st.st_uid, st.st_gid)
    assert P.dir_writable_by(str(d), other, other) == parents_open
    d.chmod(0o755)  # the owner only
    assert P.dir_writable_by(str(d), st.st_uid, st.st_gid)
    assert not P.dir_writable_by(str(d), other, other)
    d.chmod(0o777)
    (tmp_path / "a").chmod(0o700)  # a parent others cannot search
    assert not P.dir_writable_by(str(d), other, other)
    assert not P.dir_writable_by(str(tmp_path / "missing"), st.st_uid, st.st_gid)
