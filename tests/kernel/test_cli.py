"""The command line: probe facts, and one-line exit-2 errors for bad environments."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.kernel.conftest import require

PY = [sys.executable, "-m", "tracer"]


def _run(args, **kw):
    return subprocess.run(PY + args, capture_output=True, text=True, timeout=60, **kw)


def _kernel_config():
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return f.read()
    except OSError:
        return None


def test_probe_json_reports_this_kernel():
    require("btf")
    r = _run(["probe", "--json"])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    feats = {k: v["available"] for k, v in res["features"].items()}
    assert res["kernel"] == os.uname().release
    for must in ("btf", "ringbuf", "tracepoint_syscalls", "tracepoint_sock", "raw_tracepoint",
                 "uprobe", "tc", "sockops", "sk_msg", "bpf_stats"):
        assert feats[must] is True, must
    config = _kernel_config()
    if config is not None:
        # the probe tried; the kernel config is the independent witness
        assert feats["kprobe"] == ("CONFIG_KPROBES=y" in config)
        forced = "CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY=y" in config
        if forced:
            assert res["lockdown"] == "integrity"
            assert feats["probe_write_user"] is False
    with open("/sys/kernel/security/lockdown") as f:
        text = f.read()
    assert res["lockdown"] == text[text.index("[") + 1:text.index("]")]
    assert set(res["decisions"]) >= {"socket capture", "event transport", "kprobes"}
    assert "table" not in r.stderr and r.stderr == ""


def test_probe_table_names_fallbacks():
    require("btf")
    r = _run(["probe"])
    assert r.returncode == 0
    assert "decisions:" in r.stdout
    assert "socket capture: syscall tracepoints" in r.stdout


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
def test_unprivileged_run_exits_2_naming_the_capability():
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "--inh-caps=-all", *PY, "run", "--duration", "1"],
                       capture_output=True, text=True, timeout=60, env=env, cwd="/")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "missing capability CAP_BPF and CAP_PERFMON" in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args, needle", [
    (["run", "--port", "0"], "not a TCP port"),
    (["run", "--netns", "no-such-ns-4711"], "ip netns add no-such-ns-4711"),
    (["run", "--cgroup", "no/such/cgroup"], "cgroup 'no/such/cgroup' not found"),
    (["run", "--capture-bytes", "9000"], "16..4096"),
    (["run", "--bogus"], "unrecognized arguments"),
    (["run", "--output", "/no/such/dir/x.jsonl", "--duration", "1"], "cannot write"),
])
def test_usage_errors_are_one_line_exit_2(args, needle):
    r = _run(args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 1 or r.stderr.startswith("usage:")


def test_missing_btf_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    """Kernels without BTF cannot run CO-RE objects: say so, name the fix."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the capability check comes first")
    from tracer import cli, probe

    monkeypatch.setattr(probe, "BTF_PATH", str(tmp_path / "no-btf"))
    assert cli.main(["run", "--duration", "1", "--output", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no kernel BTF" in err and "CONFIG_DEBUG_INFO_BTF=y" in err
