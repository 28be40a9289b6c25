"""`python -m tracer funcs` refuses bad targets and options with exit 2 and
one line naming the target and the reason, before any BPF (no root needed)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*args):
    p = subprocess.run([sys.executable, "-m", "tracer", "funcs", *args], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


@pytest.mark.parametrize("args,msg", [
    (["/no/such/binary:f"], "/no/such/binary:f: /no/such/binary: no such file"),
    ([f"{sys.executable}:no_such_function_xyz"], "no function named 'no_such_function_xyz'"),
    (["libnothere-xyz.so.9:f"], "library or program 'libnothere-xyz.so.9' not found"),
    (["libc.so.6:write(float x)"], "libc.so.6:write(float x): unknown type 'float'"),
    (["libc.so.6:write(int a, int b, int c, int d, int e, int f, int g)"], "at most 6"),
    (["justaname"], "justaname: expected BINARY:SYMBOL"),
    (["libc.so.6:write", "--duration", "0"], "--duration must be positive"),
    (["libc.so.6:write", "--pid", "999999999"], "--pid 999999999: no such process"),
    (["libc.so.6:write", "--stack-copy", "1000"], "--stack-copy must be a multiple of 1024"),
    (["libc.so.6:write", "--netns", "no-such-ns-4711"], "ip netns add no-such-ns-4711"),
    (["libc.so.6:write", "--cgroup", "no/such/cgroup-4711"], "cgroup 'no/such/cgroup-4711'"),
    (["kernel:vfs_read", "libc.so.6:write"], "separate runs"),
    # kernel: targets share the user-space checks (tracer/funcs/cli.py)
    (["kernel:vfs_read", "--stack"], "--stack applies to user-space targets only"),
    (["kernel:vfs_read", "--pid", "999999999"], "--pid 999999999: no such process"),
    (["kernel:vfs_read", "--duration", "-1"], "--duration must be positive"),
    (["kernel:vfs_read", "--netns", "no-such-ns-4711"], "ip netns add no-such-ns-4711"),
])
def test_bad_usage_is_one_line_exit_2(args, msg):
    rc, err = _run(*args)
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert msg in err
