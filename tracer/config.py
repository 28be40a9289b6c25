"""The run configuration file (TOML), merged with the command line.

    [scope]      in-kernel: what is captured at all (same as --port/--pid/--netns/--cgroup)
    [filter]     per request, in user space, every skip counted
    [sampling]   parent-based head sampling by ratio
    [adaptive]   the kernel samples new connections under pressure

Precedence: a flag given on the command line replaces the file's value for
that key (`--port 80` replaces scope.ports); keys the command line does not
set come from the file; the rest are defaults. SIGHUP re-reads the file and
merges it with the same command line again.

Errors are ConfigError: one line naming the file, the key and the fix.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field

from .sampling import AdaptiveSpec, FilterSpec


class ConfigError(ValueError):
    """str() is the one line shown to the user."""


@dataclass
class Scope:
    ports: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)  # names or inode numbers
    cgroups: list[str] = field(default_factory=list)  # cgroup v2 paths
    processes: list[str] = field(default_factory=list)  # exact process (thread) names


@dataclass
class Config:
    scope: Scope = field(default_factory=Scope)
    filter: FilterSpec = field(default_factory=FilterSpec)
    ratio: float | None = None  # None: no head sampling (flags are not honoured either)
    adaptive: AdaptiveSpec = field(default_factory=AdaptiveSpec)
    path: str = ""


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def _port_list(v) -> bool:
    return isinstance(v, list) and all(type(x) is int and 0 < x < 65536 for x in v)


def _pid_list(v) -> bool:
    return isinstance(v, list) and all(type(x) is int and x > 0 for x in v)


def _netns_list(v) -> bool:
    return isinstance(v, list) and all((isinstance(x, str) and x) or (type(x) is int and x > 0)
                                       for x in v)


def _comm_list(v) -> bool:
    """Exact names as the kernel compares them: 1..15 bytes, no glob characters."""
    return _str_list(v) and all(len(x.encode()) < 16 and not set(x) & set("*?[]") for x in v)


def _cgroup_filter_list(v) -> bool:
    return _netns_list(v)


def _methods(v) -> bool:
    return _str_list(v) and all(x.isalpha() for x in v)


def _share(v) -> bool:
    return type(v) in (int, float) and not math.isnan(v) and 0 <= v <= 1


def _positive(v) -> bool:
    return type(v) in (int, float) and not math.isnan(v) and v > 0


def _bool(v) -> bool:
    return type(v) is bool


def _count(v) -> bool:
    return type(v) is int and 1 <= v <= 3600


# section -> key -> (check, what a good value looks like)
SCHEMA = {
    "scope": {
        "ports": (_port_list, "a list of TCP ports, e.g. [8080, 443]"),
        "pids": (_pid_list, "a list of process ids, e.g. [1234]"),
        "netns": (_netns_list, 'a list of netns names or inodes, e.g. ["blue"]'),
        "cgroups": (_str_list, 'a list of cgroup v2 paths, e.g. ["/sys/fs/cgroup/app.slice"]'),
        "processes": (_comm_list, 'a list of exact process names of at most 15 bytes, e.g. '
                                  '["nginx"] (globs go in filter.processes)'),
    },
    "filter": {
        "include_paths": (_str_list, 'a list of path globs, e.g. ["/api/*"]'),
        "exclude_paths": (_str_list, 'a list of path globs, e.g. ["/healthz", "/metrics*"]'),
        "methods": (_methods, 'a list of HTTP methods, e.g. ["GET", "POST"]'),
        "processes": (_str_list, 'a list of process name (comm) globs, e.g. ["nginx", "python*"]'),
        "executables": (_str_list, 'a list of executable path globs, e.g. ["/usr/bin/*"]'),
        "cgroups": (_cgroup_filter_list,
                    'a list of cgroup v2 path globs or ids, e.g. ["/system.slice/*"]'),
    },
    "sampling": {
        "ratio": (_share, "a number within 0..1, e.g. 0.1"),
    },
    "adaptive": {
        "enabled": (_bool, "true or false"),
        "ring_fill": (_share, "a share of the ring buffer within 0..1, e.g. 0.5"),
        "cpu_budget": (_positive, "a positive share of one core, e.g. 0.25"),
        "min_keep": (_share, "a share of new connections within 0..1, e.g. 0.01"),
        "relax_after": (_count, "a number of seconds within 1..3600, e.g. 3"),
    },
}


def parse(text: str, path: str = "<config>") -> Config:
    """A Config from TOML text; ConfigError names the key and the fix."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: not valid TOML ({e}): fix the syntax") from None
    cfg = Config(path=path)
    for section, body in doc.items():
        keys = SCHEMA.get(section)
        if not isinstance(body, dict):
            home = [s for s, k in SCHEMA.items() if section in k]
            raise ConfigError(f"config {path}: key {section} outside a section: "
                              + (f"put it under [{home[0]}]" if home else
                                 "put keys under " + ", ".join(f"[{s}]" for s in SCHEMA)))
        if keys is None:
            raise ConfigError(f"config {path}: unknown section [{section}]: use one of "
                              + ", ".join(f"[{s}]" for s in SCHEMA))
        for key, value in body.items():
            spec = keys.get(key)
            if spec is None:
                near = difflib.get_close_matches(key, keys, n=1)
                raise ConfigError(f"config {path}: unknown key {section}.{key}: "
                                  + (f"did you mean {near[0]}? " if near else "")
                                  + f"known keys in [{section}] are " + ", ".join(keys))
            check, good = spec
            if not check(value):
                raise ConfigError(f"config {path}: {section}.{key} = {_show(value)}: "
                                  f"must be {good}")
            _set(cfg, section, key, value)
    return cfg


def _show(value) -> str:
    s = repr(value) if not isinstance(value, str) else f'"{value}"'
    return s if len(s) <= 40 else s[:37] + "..."


def _set(cfg: Config, section: str, key: str, value) -> None:
    if section == "scope":
        setattr(cfg.scope, key, [str(v) if key == "netns" else v for v in value])
    elif section == "filter":
        setattr(cfg.filter, key, list(value))
    elif section == "sampling":
        cfg.ratio = float(value)
    elif section == "adaptive":
        if key in ("ring_fill", "cpu_budget", "min_keep"):
            value = float(value)
        setattr(cfg.adaptive, key, value)


def load(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"config {path}: {e.strerror or e}: give a readable TOML file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8 text: save it as UTF-8") from None
    return parse(text, path)


def merge(cfg: Config | None, args) -> Config:
    """The command line over the file: each scope flag given replaces the
    file's list for that key."""
    cfg = cfg or Config()
    scope = cfg.scope
    if args.port:
        scope.ports = list(args.port)
    if args.pid:
        scope.pids = list(args.pid)
    if args.netns:
        scope.netns = list(args.netns)
    if args.cgroup:
        scope.cgroups = list(args.cgroup)
    return cfg
