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
