"""`python -m tracer run` refuses a --pid (or a config file's scope.pids)
naming no process with exit 2 and one line, as `funcs` does, instead of
tracing nothing (checked before any BPF: no root needed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracer import cli

REPO = Path(__file__).resolve().parents[2]
GONE = 999999999  # above pid_max (at most 2**22): never a live process


def _check(*argv):
    args = cli.build_parser().parse_args(["run", *argv])
    cli._check_args(args)
    return args


def test_missing_pid_exits_2_one_line():
    p = subprocess.run([sys.executable, "-m", "tracer", "run", "--pid", str(GONE),
                        "--duration", "1"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr == f"tracer: --pid {GONE}: no such process\n"


@pytest.mark.parametrize("pid,msg", [
    (GONE, f"--pid {GONE}: no such process"),
    (0, "--pid 0: not a process id"),
    (-3, "--pid -3: not a process id"),
])
def test_check_args_refuses_pid(pid, msg):
    with pytest.raises(cli.UsageError) as e:
        _check("--pid", str(os.getpid()), "--pid", str(pid))
    assert str(e.value) == msg


def test_config_file_pid_is_checked_too(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text(f"[scope]\npids = [{os.getpid()}, {GONE}]\n")
    with pytest.raises(cli.UsageError) as e:
        _check("--config", str(f))
    assert str(e.value) == f"config {f}: scope.pids {GONE}: no such process"


def test_live_pids_pass():
    args = _check("--pid", str(os.getpid()), "--pid", "1")
    assert args.cfg.scope.pids == [os.getpid(), 1]
