"""harness/measure.py sample_tree: a forked child that shares its parent's
memory is not counted twice (the tracer forks its broker after loading, and
its RSS budget is the tracer's memory, not twice it). No root needed."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from harness.measure import sample_tree

# a parent that fills 64 MB, then forks a child that only sleeps: the child's
# RSS shows the shared 64 MB, its private memory does not
CHILD = """
import os, sys, time
block = bytearray(64 << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
print(pid, flush=True)
time.sleep(30)
"""


def test_a_forked_child_adds_only_its_private_memory():
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        child = int(p.stdout.readline())
        time.sleep(0.2)
        parent_rss = psutil.Process(p.pid).memory_info().rss
        child_rss = psutil.Process(child).memory_info().rss
        assert child_rss > 64 << 20  # RSS counts the shared pages in the child too
        got = sample_tree(p.pid).rss
        # the parent once, plus the child's few private pages (its stack, the
        # interpreter's writes after fork): far below the child's RSS
        assert parent_rss <= got < parent_rss + child_rss // 4
    finally:
        for proc in psutil.Process(p.pid).children(recursive=True) + [psutil.Process(p.pid)]:
            proc.kill()
        p.wait()
