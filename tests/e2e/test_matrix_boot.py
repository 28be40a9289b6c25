"""Kernel matrix end to end: boot one Debian kernel under virtme-ng (TCG) and get
its probe JSON, kernel tests and a kernel-function trace (`funcs kernel:`)
back through the shared directory. The kernel tests include the kernel-function
ones, which only check the refusal on this host (no kprobes, fentry refused):
in the guest fentry loads, so they run the CLI path end to end, both
mechanisms and the privilege drop of `funcs kernel:`. Nothing may skip there.

About a minute here (the kernel package is cached after the first run). Needs
root, qemu and busybox (`make matrix-deps`), and apt access for the first
download; skips naming whichever is missing. Deselect with `-m 'not matrix'`."""

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from harness import matrix

pytestmark = pytest.mark.matrix

ONE_TEST = "tests/kernel/test_cli.py::test_probe_json_reports_this_kernel"
KFUNC_TESTS = ("tests/kernel/test_kfuncs.py", "tests/kernel/test_kfuncs_privileges.py")


def _require_tools():
    if os.geteuid() != 0:
        pytest.skip("needs root (the guest runs BPF as root)")
    if not (Path(sys.executable).parent / "vng").exists():
        pytest.skip("virtme-ng not installed in this venv: make setup")
    for tool in ("qemu-system-x86_64", "busybox", "apt-get", "dpkg-deb", "depmod"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing: make matrix-deps")


@pytest.mark.timeout(900)
def test_debian_kernel_boots_and_reports_probe_and_kernel_tests(tmp_path):
    _require_tools()
    spec = matrix.parse_specs("debian:linux-image-6.1.0-*-amd64")[0]
    try:
        matrix.fetch_debian(spec.value)
    except matrix.KernelError as e:
        pytest.skip(f"cannot fetch a Debian kernel here: {e}")
    extra = ("--steps", "probe,tests,kfuncs", "--tests", ONE_TEST)
    for t in KFUNC_TESTS:
        extra += ("--tests", t)
    row = matrix.run_kernel(spec, tmp_path, timeout=780, accel="tcg", bench_duration=1,
                            extra=extra)
    assert row.ok, row.reason
    r = row.result
    # The row is named after the resolved package, which names the release it boots.
    assert r["kernel"] == row.label == r["probe"]["data"]["kernel"]
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", r["kernel"])
    assert r["virt"] == "tcg" and r["emulated"] is True
    feats = r["probe"]["data"]["features"]
    assert feats["btf"]["available"] and feats["ringbuf"]["available"]
    # The point of the matrix: Debian 6.1 loads fentry, which this host refuses.
    assert feats["fentry"]["available"], feats["fentry"]
    # Every real object loads there as the tracer loads it (the Go and asyncio
    # runtime probes too: the matrix's answer to which kernels run them); inject.bpf.o
    # without the --comm check in sk_msg, whose verifier lacks bpf_get_current_comm (#22).
    for obj in ("sock_object", "tls_object", "inject_object", "golang_object", "pyasync_object",
                "funcs_object", "kfuncs_object"):
        assert feats[obj]["available"], feats[obj]
    assert r["probe"]["data"]["decisions"]["header injection"].startswith(
        "sockops + sk_msg; sk_msg lacks bpf_get_current_comm"), r["probe"]["data"]["decisions"]
    tests = r["tests"]
    outcomes = {c["id"]: c["outcome"] for c in tests["cases"]}
    assert (tests["passed"], tests["failed"], tests["skipped"]) == (7, 0, 0), outcomes
    assert any(i.endswith("test_probe_json_reports_this_kernel") for i in outcomes), outcomes
    assert any(i.endswith("test_kernel_targets_drop_privileges_after_attach[drop]")
               for i in outcomes), outcomes
    # ... and so traces kernel functions: 23 opens by a child, 23 calls with an fd.
    kf = r["kfuncs"]
    assert (kf["ok"], kf["method"], kf["calls"], kf["fds_ok"]) == (True, "fentry", 23, 23), kf
    assert kf["unmatched_exits"] == kf["events_dropped"] == 0
    head, body = matrix.table([row])
    assert dict(zip(head, body[0], strict=True))["fentry"] == "yes"
