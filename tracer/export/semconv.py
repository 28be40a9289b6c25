"""What every exporter agrees on: which process a span belongs to (resource),
its low-cardinality route, its name and whether it is an error (OTel semconv).
"""

from __future__ import annotations

import os
import re
import socket

GRPC_OK = 0
# OTel RPC semconv: a server span is an error only for these gRPC codes (the
# server's fault); a client span for any non-OK code.
GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})  # UNKNOWN DEADLINE_EXCEEDED
# UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                          "TRACE", "PATCH"})
OTHER_METHOD = "_OTHER"  # semconv value for methods outside the known set

ID = "{id}"
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]{8,}")
_DIGIT = re.compile(r"\d")
_CONTAINER_ID = re.compile(r"(?:^|[/\-:])([0-9a-f]{64})(?:\.scope)?$")


def template_segment(seg: str) -> str:
    if not seg:
        return seg
    if seg.isdigit():
        return ID
    if not _DIGIT.search(seg):  # words stay: /users, /v, /static
        return seg
    if _UUID.fullmatch(seg) or _HEX.fullmatch(seg):
        return ID
    # long tokens mixing letters and digits (base64 ids, hashes, slugs with ids)
    if len(seg) >= 16:
        return ID
    # numbers with a unit or separator: 123.json stays a file, 42-abc is an id
    head, dot, ext = seg.partition(".")
    if dot and head.isdigit():
        return ID + dot + ext
    return seg


def route(path: str) -> str:
    """'/item/123/photos/9f1c...' -> '/item/{id}/photos/{id}': bounded cardinality."""
    if not path or path[0] != "/":
        return path or "/"
    return "/".join(template_segment(s) for s in path.split("/"))


class RouteCache:
    """route() memoised per exact path (bounded: cleared when full)."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._cache: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        r = self._cache.get(path)
        if r is None:
            if len(self._cache) >= self.size:
                self._cache.clear()
            r = self._cache[path] = route(path)
        return r


def is_rpc(span) -> bool:
    return span.protocol == "grpc"


def grpc_code(attrs: dict) -> int | None:
    code = attrs.get("rpc.grpc.status_code")
    return code if isinstance(code, int) else None


def is_error(span, attrs: dict) -> bool:
    """OTel semconv status: HTTP server 5xx, client 4xx/5xx; gRPC by status code."""
    if is_rpc(span):
        code = grpc_code(attrs)
        if code is not None:
            return code in GRPC_SERVER_ERRORS if span.kind == "server" else code != GRPC_OK
    status = span.status
    return status >= 500 or (status >= 400 and span.kind == "client")


def error_type(span, attrs: dict) -> str:
    """semconv error.type: the status code as a string (or the gRPC code)."""
    if is_rpc(span):
        code = grpc_code(attrs)
        if code is not None:
            return str(code)
    return str(span.status) if span.status > 0 else "_OTHER"


def method(span) -> str:
    m = span.method
    return m if m in HTTP_METHODS else OTHER_METHOD


def span_name(span, route_of=route) -> str:
    """RPC: '{rpc.service}/{rpc.method}' (the path without its slash); HTTP:
    '{method} {route}' with the templated path standing in for http.route,
    which only a framework knows."""
    if is_rpc(span):
        return span.path.lstrip("/") or "grpc"
    return f"{method(span)} {route_of(span.path)}"


def extra_attributes(span) -> dict:
    """Attributes the contract's JSON keeps as top-level fields."""
    extra = {}
    if span.peer_addr:
        extra["network.peer.address"] = span.peer_addr
    if span.peer_port:
        extra["network.peer.port"] = span.peer_port
    extra["network.transport"] = "tcp"
    if span.tid:
        extra["thread.id"] = span.tid
    return extra


def container_id(pid: int) -> str:
    """The container id from /proc/PID/cgroup (docker, containerd, cri-o, podman)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        path = line.rpartition(":")[2]
        m = _CONTAINER_ID.search(path)
        if m:
            return m.group(1)
    return ""


def exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


class Resources:
    """Resource attributes per traced process, cached per (pid, comm).

    service.name is the comm unless `names` maps the comm or the executable's
    base name to a service name (`--service-name python=checkout`).
    """

    def __init__(self, names: dict[str, str] | None = None, host: str | None = None,
                 max_entries: int = 4096) -> None:
        self.names = dict(names or {})
        self.host = host if host is not None else socket.gethostname()
        self.max_entries = max_entries
        self._cache: dict[tuple[int, str], dict] = {}

    def service(self, pid: int, comm: str) -> str:
        return self.of(pid, comm)["service.name"]

    def of(self, pid: int, comm: str) -> dict:
        key = (pid, comm)
        res = self._cache.get(key)
        if res is None:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            res = self._cache[key] = self._build(pid, comm)
        return res

    def _build(self, pid: int, comm: str) -> dict:
        name = self.names.get(comm)
        exe = ""
        if name is None and self.names:
            exe = exe_name(pid)
            name = self.names.get(exe)
        res = {"service.name": name or comm or "unknown_service",
               "process.pid": pid}
        if comm:
            res["process.executable.name"] = comm
        if self.host:
            res["host.name"] = self.host
        cid = container_id(pid)
        if cid:
            res["container.id"] = cid
        return res


def parse_service_names(items: list[str]) -> dict[str, str]:
    """['python=checkout', 'node=gateway'] -> {'python': 'checkout', ...}."""
    out = {}
    for item in items:
        key, sep, name = item.partition("=")
        if not sep or not key or not name:
            raise ValueError(f"--service-name {item!r}: expected COMM=NAME (or EXE=NAME)")
        out[key] = name
    return out
