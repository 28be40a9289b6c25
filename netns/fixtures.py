"""pytest plugin: a fresh client/frontend/backend topology per test, always torn
down. Load it with ``pytest_plugins = ["netns.fixtures"]`` in the root conftest
or ``-p netns.fixtures``, or import ``topology`` into a conftest below it."""

from __future__ import annotations

import os
import shutil

import pytest

from netns.topology import Topology


def netns_unavailable() -> str | None:
    """Why namespaces cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the 'ip' command (iproute2)"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "needs pyroute2"
    return None


@pytest.fixture
def topology():
    """A Topology that is up; on teardown asserts nothing of it survived."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    topo = Topology()
    with topo:
        yield topo
    left = topo.leftovers()
    assert not any(left.values()), f"topology left behind: {left}"
