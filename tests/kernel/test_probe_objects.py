"""The probe loads each real object as the tracer does: on this kernel every
object it reports available loads again the way the agent loads it, and a
refused one carries a one-line reason."""

from __future__ import annotations

import os

import pytest

from tracer import probe


@pytest.fixture(scope="module")
def result():
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_BPF, CAP_PERFMON)")
    return probe.probe()


def test_every_object_is_probed_with_a_one_line_detail(result):
    for name in probe.OBJECTS:
        f = result.features[name]
        assert f.detail and "\n" not in f.detail, (name, f.detail)
    # the decisions follow the objects
    d = probe.decisions(result)
    assert d["header injection"].startswith("unavailable") != result.ok("inject_object")
    assert d["socket capture"].startswith("unavailable") != result.ok("sock_object")
    assert d["Go goroutine causality"].startswith("unavailable") != result.ok("golang_object")
    assert d["asyncio task causality"].startswith("unavailable") != result.ok("pyasync_object")


def test_available_objects_load_as_the_agent_loads_them(result, tmp_path):
    if not result.ok("sock_object"):
        pytest.skip(f"sock.bpf.o refused: {result.features['sock_object'].detail}")
    from tracer import golang, inject, pyasync, tls

    sock = probe._sock_opened()
    try:
        if result.ok("inject_object"):
            inject.Injector.load(sock, self_tgid=os.getpid()).close()
        if result.ok("tls_object"):
            tls.TlsProbes.load(sock, self_tgid=os.getpid()).close()
        if result.ok("golang_object"):
            golang.GoProbes.load(sock, self_tgid=os.getpid()).close()
        if result.ok("pyasync_object"):
            pyasync.PyProbes.load(sock, self_tgid=os.getpid()).close()
    finally:
        sock.close()
