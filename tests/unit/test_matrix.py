"""Kernel matrix: spec parsing, package choice, row judgement, report, bad kernels.
No root, no VM."""

import json
import sys
from pathlib import Path

import pytest

from harness import matrix
from harness.__main__ import main
from harness.matrix import KernelSpec, MatrixError, Row
from harness.matrix_guest import RESULT_SCHEMA, parse_junit


def test_parse_specs_all_kinds():
    specs = matrix.parse_specs(" host, debian:linux-image-6.1.0-*-rt-amd64 ,"
                               "/k/vmlinuz-6.6:/k/mods/6.6 , path:./bzImage")
    assert specs == [KernelSpec("host"), KernelSpec("debian", "linux-image-6.1.0-*-rt-amd64"),
                     KernelSpec("path", "/k/vmlinuz-6.6", "/k/mods/6.6"),
                     KernelSpec("path", "./bzImage")]
    assert [s.label for s in specs] == ["host", "6.1.0-*-rt-amd64", "vmlinuz-6.6", "bzImage"]


def test_default_kernels_parse():
    specs = matrix.parse_specs(matrix.DEFAULT_KERNELS)
    assert [s.kind for s in specs] == ["host"] + ["debian"] * 8
    # 5.10 x3 (bullseye), 6.1 x3 (bookworm), 6.12 (trixie), then 6.1 under lockdown
    assert [matrix.suite_of(s.value) for s in specs[1:]] == \
        ["bullseye"] * 3 + ["bookworm"] * 3 + ["trixie", "bookworm"]
    assert specs[-1].append == "lockdown=confidentiality"
    assert specs[-1].label == "6.1.0-*-amd64@lockdown=confidentiality"


def test_kernel_arguments_name_their_row_and_reach_the_command(tmp_path):
    (spec,) = matrix.parse_specs("debian:linux-image-6.1.0-*-amd64@lockdown=integrity")
    assert (spec.value, spec.append) == ("linux-image-6.1.0-*-amd64", "lockdown=integrity")
    # the same kernel with and without arguments: two rows
    assert len(matrix.parse_specs("debian:linux-image-6.1.0-*-amd64,"
                                  "debian:linux-image-6.1.0-*-amd64@lockdown=integrity")) == 2
    cmd = matrix.vng_command(tmp_path / "v", tmp_path, "k", "tcg", 2.0, append="lockdown=integrity")
    assert cmd[cmd.index("--append") + 1] == "lockdown=integrity"
    assert "--append" not in matrix.vng_command(tmp_path / "v", tmp_path, "k", "tcg", 2.0)


@pytest.mark.parametrize("bad", ["", "bogus", "debian:", "debian:foo", "host,host",
                                 "host@lockdown=integrity",
                                 "debian:linux-image-6.1.0-*-amd64@x;reboot"])
def test_parse_specs_rejects(bad):
    with pytest.raises(MatrixError):
        matrix.parse_specs(bad)


def test_debian_star_is_the_abi_number_only():
    names = ["linux-image-6.1.0-9-amd64", "linux-image-6.1.0-56-amd64",
             "linux-image-6.1.0-56-cloud-amd64", "linux-image-6.1.0-56-amd64-dbg",
             "linux-image-6.1.0-56-amd64-unsigned", "linux-image-6.1.0-10-amd64"]
    assert matrix.debian_candidates("linux-image-6.1.0-*-amd64", names) == [
        "linux-image-6.1.0-56-amd64", "linux-image-6.1.0-10-amd64", "linux-image-6.1.0-9-amd64"]
    assert matrix.debian_candidates("linux-image-6.1.0-*-cloud-amd64", names) == [
        "linux-image-6.1.0-56-cloud-amd64"]


def test_trixie_star_is_the_point_release():
    names = ["linux-image-6.12.118+deb13-amd64", "linux-image-6.12.9+deb13-amd64",
             "linux-image-6.12.118+deb13-rt-amd64", "linux-image-6.12.118+deb13-amd64-dbg",
             "linux-image-amd64"]
    assert matrix.debian_candidates("linux-image-6.12.*-amd64", names) == [
        "linux-image-6.12.118+deb13-amd64", "linux-image-6.12.9+deb13-amd64"]
    assert matrix.debian_candidates("linux-image-6.12.*-rt-amd64", names) == [
        "linux-image-6.12.118+deb13-rt-amd64"]


def test_unknown_series_has_no_suite():
    with pytest.raises(matrix.KernelError, match="no Debian suite known"):
        matrix.suite_of("linux-image-4.19.0-*-amd64")


def test_fetch_goes_through_a_private_apt_configuration(tmp_path, monkeypatch):
    """Every apt call reads and writes below the cache, never the machine's
    sources or lists; the lists are fetched once a day."""
    calls = []

    def fake_check(cmd, timeout=300, cwd=None, **kw):
        calls.append(cmd)
        if cmd[0] == "apt-cache":
            return "linux-image-5.10.0-45-amd64\nlinux-image-5.10.0-46-amd64\n"
        if "download" in cmd:
            (Path(cwd) / "k.deb").write_bytes(b"")
        if cmd[0] == "dpkg-deb":
            root = Path(cmd[-1])
            (root / "boot").mkdir(parents=True)
            (root / "boot/vmlinuz-5.10.0-46-amd64").write_bytes(b"")
            (root / "lib/modules/5.10.0-46-amd64").mkdir(parents=True)
        return ""

    monkeypatch.setattr(matrix, "_check", fake_check)
    img = matrix.fetch_debian("linux-image-5.10.0-*-amd64", tmp_path)
    assert img == tmp_path / "debian/linux-image-5.10.0-46-amd64/root/boot/vmlinuz-5.10.0-46-amd64"
    root = tmp_path / "apt" / "bullseye"
    opts = ["-o", f"Dir::Etc::sourcelist={root}/sources.list", "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State={root}/state", "-o", f"Dir::Cache={root}/cache",
            "-o", "APT::Get::List-Cleanup=0"]
    assert calls[0] == ["apt-get", *opts, "-q", "update"]
    assert calls[1] == ["apt-cache", *opts, "pkgnames", "linux-image-5.10.0-"]
    assert calls[2] == ["apt-get", *opts, "download", "-q", "linux-image-5.10.0-46-amd64"]
    assert [c[0] for c in calls[3:]] == ["dpkg-deb", "depmod"]
    sources = (root / "sources.list").read_text().splitlines()
    assert sources[0] == (f"deb [signed-by={matrix.DEBIAN_KEYRING}] {matrix.DEBIAN_MIRROR}"
                          "/debian bullseye main")
    assert sources[2].endswith("/debian-security bullseye-security main")
    calls.clear()  # unpacked, lists fresh: one lookup, no update, no download
    assert matrix.fetch_debian("linux-image-5.10.0-*-amd64", tmp_path) == img
    assert [c[:2] for c in calls] == [["apt-cache", "-o"], ["depmod", "-a"]]


def test_fetch_offline_takes_the_kernel_unpacked_before(tmp_path, monkeypatch):
    root = tmp_path / "debian/linux-image-6.12.9+deb13-amd64/root"
    (root / "boot").mkdir(parents=True)
    (root / "boot/vmlinuz-6.12.9+deb13-amd64").write_bytes(b"")
    (root / "lib/modules/6.12.9+deb13-amd64").mkdir(parents=True)
    (root / "lib/modules/6.12.9+deb13-amd64/modules.dep").write_text("")

    def offline(cmd, **kw):
        raise matrix.KernelError("apt-get -o failed: Temporary failure resolving 'deb.debian.org'")

    monkeypatch.setattr(matrix, "_check", offline)
    assert matrix.fetch_debian("linux-image-6.12.*-amd64", tmp_path) == \
        root / "boot/vmlinuz-6.12.9+deb13-amd64"
    with pytest.raises(matrix.KernelError, match="Temporary failure"):
        matrix.fetch_debian("linux-image-5.10.0-*-amd64", tmp_path)


def _result(**over):
    r = {"schema": RESULT_SCHEMA, "label": "k", "kernel": "6.1.0-55-amd64", "virt": "tcg",
         "emulated": True, "env": {"netns": True},
         "probe": {"ok": True, "data": {"lockdown": "none", "features": {
             "btf": {"available": True}, "fentry": {"available": True},
             "kprobe": {"available": False, "detail": "attach: ENOENT"}},
             "decisions": {"socket capture": "syscall tracepoints (sock.bpf.o)"}}},
         "tests": {"passed": 3, "failed": 0, "skipped": 1, "cases": [
             {"id": "t::a", "outcome": "skipped", "message": "no kprobe", "time_s": 0}]},
         "bench": {"ok": True, "events_per_s": 12345.6, "achieved_rps": 800.0},
         "timings_s": {"probe": 1.0, "total": 9.0}}
    r.update(over)
    return r


def test_judge_and_report_marks_emulated_timings(tmp_path):
    ok = matrix.judge(Row("k", "spec", result=_result(), wall_s=9))
    nobtf = _result()
    nobtf["probe"]["data"]["features"]["btf"] = {"available": False}
    bad = matrix.judge(Row("nobtf", "spec", result=nobtf))
    failing = matrix.judge(Row("f", "spec", result=_result(tests={"passed": 1, "failed": 2,
                                                                  "skipped": 0})))
    assert ok.ok and not ok.reason
    assert not bad.ok and "no BTF" in bad.reason
    assert not failing.ok and "2 test(s) failed" in failing.reason
    nosock = _result()
    nosock["probe"]["data"]["features"]["sock_object"] = {
        "available": False, "detail": "tp_exit_accept: invalid func bpf_get_current_task_btf#158"}
    refused = matrix.judge(Row("5.10", "spec", result=nosock))
    assert not refused.ok and refused.reason == \
        "sock.bpf.o refused: tp_exit_accept: invalid func bpf_get_current_task_btf#158"

    # a guest that died in its tests step (a TCG guest's kernel oopsed there):
    # only the probe's timing came back
    stopped = matrix.judge(Row("6.12", "spec", result=_result(
        steps=["probe", "tests", "kfuncs", "bench"], tests={}, bench={})))
    assert not stopped.ok and stopped.reason == "the guest stopped during its tests step"
    assert matrix.failure_line("[  5.1] x\n[ 597.8] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n"
                               "[ 597.9] Kernel panic - not syncing: Fatal exception\n") == \
        "Oops: int3: 0000 [#1] PREEMPT SMP NOPTI; Kernel panic - not syncing: Fatal exception"

    md_path = matrix.write_report([ok, bad, failing], tmp_path, "rid")
    md = md_path.read_text()
    head, body = matrix.table([ok])
    cells = dict(zip(head, body[0], strict=True))
    assert cells["fentry"] == "yes" and cells["kprobe"] == "no" and cells["lockdown"] == "none"
    assert cells["tests p/f/s"] == "3/0/1" and cells["events/s"] == "12,346*"
    assert cells["fallbacks"] == "–" and cells["status"] == "ok"
    ok.result["probe"]["data"]["decisions"].update(
        {"fentry": "refused: syscall tracepoints instead",
         "kprobes": "available, not needed (tracepoints are used everywhere)"})
    head, body = matrix.table([ok])
    cells = dict(zip(head, body[0], strict=True))
    assert cells["fallbacks"] == "fentry: refused; kprobes: available, not needed"
    assert "emulated, not comparable" in md and "FAILED: no BTF" in md
    assert "unavailable: kprobe: attach: ENOENT" in md and "test skipped: t::a" in md
    html = (tmp_path / "matrix.html").read_text()
    assert "<table>" in html and "12,346*" in html
    assert len(json.loads((tmp_path / "matrix.json").read_text())) == 3


def test_broken_kernel_path_is_a_failed_row_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(matrix, "preflight", lambda specs: None)
    specs = matrix.parse_specs(f"{tmp_path}/no-such-vmlinuz,{tmp_path}/junk")
    (tmp_path / "junk").write_text("not a kernel")
    # A "kernel" that boots nothing: the guest command exits at once, no result.
    monkeypatch.setattr(matrix, "vng_command",
                        lambda *a, **k: [sys.executable, "-c", "raise SystemExit(3)"])
    rows, report = matrix.run_matrix(specs, tmp_path / "out", cache=tmp_path / "cache")
    assert [r.ok for r in rows] == [False, False]
    assert "kernel image not found" in rows[0].reason
    assert rows[1].reason.startswith("no result came back (exit 3")
    assert "FAILED: kernel image not found" in report.read_text()


def test_timeout_is_a_failed_row(tmp_path, monkeypatch):
    monkeypatch.setattr(matrix, "preflight", lambda specs: None)
    (tmp_path / "vmlinuz").write_text("x")
    monkeypatch.setattr(matrix, "vng_command", lambda *a, **k: [
        sys.executable, "-c", "import time; time.sleep(30)"])
    rows, _ = matrix.run_matrix(matrix.parse_specs(f"{tmp_path}/vmlinuz"), tmp_path / "o",
                                timeout=0.5, cache=tmp_path / "cache")
    assert not rows[0].ok and rows[0].reason == "timed out after 0 s"


def test_path_kernel_with_separate_modules_is_staged(tmp_path):
    img = tmp_path / "bzImage"
    img.write_text("x")
    mods = tmp_path / "m" / "6.6.1"
    mods.mkdir(parents=True)
    staged = matrix.stage_path_kernel(KernelSpec("path", str(img), str(mods)), tmp_path / "c")
    assert staged.name == "vmlinuz-6.6.1" and staged.resolve() == img
    assert (staged.parent.parent / "lib/modules/6.6.1").resolve() == mods


def test_vng_command_shares_the_result_dir_and_disables_kvm(tmp_path):
    cmd = matrix.vng_command(tmp_path / "vmlinuz", tmp_path / "out", "k", "tcg", 2.0)
    assert "--disable-kvm" in cmd and cmd[cmd.index("--rwdir") + 1] == str(tmp_path / "out")
    assert "harness.matrix_guest" in cmd[-1] and "--virt tcg" in cmd[-1]
    assert "--disable-kvm" not in matrix.vng_command(tmp_path / "v", tmp_path, "k", "kvm", 2)


def test_collect_merges_results_and_cli_exit_codes(tmp_path, capsys):
    for name, res in (("ubuntu-22.04", _result(label="ubuntu-22.04", virt="vm",
                                                emulated=False)),
                      ("rocky-8", _result(label="rocky-8",
                                          tests={"passed": 0, "failed": 1, "skipped": 0}))):
        (tmp_path / "synced" / name).mkdir(parents=True)
        (tmp_path / "synced" / name / "result.json").write_text(json.dumps(res))
    (tmp_path / "synced" / "junk").mkdir()
    (tmp_path / "synced" / "junk" / "result.json").write_text("{not json")
    rc = main(["matrix", "--collect", str(tmp_path / "synced"), "--out", str(tmp_path / "r")])
    assert rc == 1
    out = capsys.readouterr().out
    assert "1/3 kernels ok" in out and "rocky-8" in out
    md = next((tmp_path / "r").glob("*/matrix.md")).read_text()
    assert "ubuntu-22.04" in md and "12,346 " in md and "unreadable result" in md


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main(["matrix", "--kernels", "bogus"]) == 2
    assert main(["matrix", "--kernels", "host", "--collect", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("harness matrix: error:") for line in err)


def test_parse_junit(tmp_path):
    p = tmp_path / "j.xml"
    p.write_text('<testsuites><testsuite><testcase classname="a" name="t1" time="0.1"/>'
                 '<testcase classname="a" name="t2"><skipped message="no fentry"/></testcase>'
                 '<testcase classname="a" name="t3"><failure message="boom"/></testcase>'
                 '</testsuite></testsuites>')
    r = parse_junit(p)
    assert (r["passed"], r["failed"], r["skipped"]) == (1, 1, 1)
    assert r["cases"][1] == {"id": "a::t2", "outcome": "skipped", "time_s": 0.0,
                             "message": "no fentry"}


def test_kernel_without_9p_is_refused_before_booting(tmp_path, monkeypatch):
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "config-6.1.0-56-cloud-amd64").write_text("# CONFIG_NET_9P is not set\n")
    monkeypatch.setattr(matrix.shutil, "which", lambda name: None)
    monkeypatch.setattr(matrix.Path, "exists", lambda self: False)
    with pytest.raises(matrix.KernelError, match="no 9p .* no virtiofsd"):
        matrix.root_share(boot / "vmlinuz-6.1.0-56-cloud-amd64")
    (boot / "config-6.1.0-56-cloud-amd64").write_text("CONFIG_NET_9P=m\n")
    assert matrix.root_share(boot / "vmlinuz-6.1.0-56-cloud-amd64") == "9p"


def test_failure_line_picks_the_panic_over_the_stack_dump():
    console = ("[2.4] virtme initramfs: initramfs does not have module crypto-cbc(aes)\n"
               "[2.5] virtme initramfs: initramfs does not have module fs-9p\n"
               "Failed to mount real root.  We are stuck.\n"
               "[7.6] Kernel panic - not syncing: Attempted to kill init!\n[7.6]  </TASK>\n")
    line = matrix.failure_line(console)
    assert line.startswith("initramfs does not have module fs-9p; Failed to mount real root")
    assert "Kernel panic - not syncing" in line
    assert matrix.failure_line("a\nlast words\n\n") == "last words"


def test_merged_usr_kernel_gets_lib_modules_where_virtme_looks(tmp_path, monkeypatch):
    """trixie ships its modules under usr/lib/modules: lib -> usr/lib."""
    calls = []

    def fake_check(cmd, timeout=300, cwd=None, **kw):
        calls.append(cmd[0])
        if cmd[0] == "apt-cache":
            return "linux-image-6.12.118+deb13-amd64\n"
        if "download" in cmd:
            (Path(cwd) / "k.deb").write_bytes(b"")
        if cmd[0] == "dpkg-deb":
            root = Path(cmd[-1])
            (root / "boot").mkdir(parents=True)
            (root / "boot/vmlinuz-6.12.118+deb13-amd64").write_bytes(b"")
            (root / "usr/lib/modules/6.12.118+deb13-amd64").mkdir(parents=True)
        if cmd[0] == "depmod":
            assert (Path(cmd[-2]) / "lib/modules" / cmd[-1]).is_dir()
        return ""

    monkeypatch.setattr(matrix, "_check", fake_check)
    img = matrix.fetch_debian("linux-image-6.12.*-amd64", tmp_path)
    root = img.parent.parent
    assert (root / "lib").is_symlink() and (root / "lib").readlink() == Path("usr/lib")
    assert calls[-1] == "depmod"
