"""Names on the command line or in a config file to the ids the kernel
filters on: network namespace -> inode, cgroup v2 path -> id. A leaf module
(only tracer.errors): `run`, `funcs` and their kernel targets share it.
"""

from __future__ import annotations

import os

from .errors import UsageError

NETNS_DIR = "/run/netns"  # where `ip netns add NAME` binds its namespaces
CGROUP_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")  # hybrid, then unified layout


def resolve_netns(value: str) -> int:
    """NAME (under /run/netns), a path, or an inode number -> the namespace's inode."""
    if value.isdigit():
        return int(value)
    path = value if value.startswith("/") else f"{NETNS_DIR}/{value}"
    try:
        return os.stat(path).st_ino
    except OSError:
        raise UsageError(f"network namespace '{value}' not found ({path}): create it with "
                         f"'ip netns add {value}' or pass its inode number") from None


def resolve_cgroup(value: str) -> int:
    """A cgroup v2 path (absolute, or relative to the mount) -> its id, which is
    the inode of the cgroup's directory."""
    candidates = [value] if value.startswith("/") else []
    candidates += [os.path.join(root, value.lstrip("/")) for root in CGROUP_ROOTS]
    for path in candidates:
        if os.path.isdir(path):
            return os.stat(path).st_ino
    raise UsageError(f"cgroup '{value}' not found: give its path under the cgroup v2 mount "
                     "(e.g. /sys/fs/cgroup/system.slice/foo.service)")


__all__ = ["resolve_netns", "resolve_cgroup"]
