"""Parsing of `--export URL` and `--metrics HOST:PORT` (contract 2).

Strict on purpose: a typo in an export URL must stop the tracer at start
(exit 2), not make it trace for hours into nowhere. Nothing heavy is imported
here; the exporters themselves are imported only when configured.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

EXPORT_FORMS = ("otlp-grpc://HOST[:PORT] (default port 4317), "
                "otlp-http://HOST[:PORT][/PATH] (default :4318/v1/traces), jaeger-json:FILE")
METRICS_FORMS = "HOST:PORT, :PORT or [IPV6]:PORT"

DEFAULT_PORTS = {"otlp-grpc": 4317, "otlp-http": 4318}
OTLP_HTTP_PATH = "/v1/traces"


@dataclass(frozen=True)
class ExportTarget:
    kind: str  # "otlp-grpc" | "otlp-http" | "jaeger-json"
    host: str = ""
    port: int = 0
    path: str = ""  # HTTP path (otlp-http) or output file (jaeger-json)

    @property
    def label(self) -> str:
        """Stable name for counters and metrics labels."""
        if self.kind == "jaeger-json":
            return f"jaeger-json:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{host}:{self.port}{self.path}"


class TargetError(ValueError):
    """str() is one line naming what is wrong and the accepted forms."""


def _valid_host(host: str) -> bool:
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return all(lab and len(lab) <= 63 and lab.replace("-", "").isalnum()
               and lab.isascii() and not lab.startswith("-") for lab in labels)


def parse_export(url: str) -> ExportTarget:
    def bad(why: str) -> TargetError:
        return TargetError(f"--export {url!r}: {why}; accepted forms: {EXPORT_FORMS}")

    if url.startswith("jaeger-json:"):
        path = url[len("jaeger-json:"):]
        if not path or path.startswith("//"):
            raise bad("missing the output file")
        return ExportTarget("jaeger-json", path=path)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in DEFAULT_PORTS:
        raise bad("unknown scheme")
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise bad("query, fragment and credentials are not supported")
    try:
        port = parts.port  # ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise bad("bad port") from None
    host = parts.hostname or ""
    if not _valid_host(host):
        raise bad("missing or invalid host")
    if port == 0:
        raise bad("bad port")
    port = port or DEFAULT_PORTS[scheme]
    path = parts.path
    if scheme == "otlp-grpc":
        if path not in ("", "/"):
            raise bad("otlp-grpc takes no path")
        path = ""
    else:
        path = path or OTLP_HTTP_PATH
    return ExportTarget(scheme, host, port, path)


def parse_metrics(addr: str) -> tuple[str, int]:
    """'HOST:PORT' | ':PORT' | '[::1]:PORT' -> (host, port); ':PORT' binds all IPv4."""
    def bad(why: str) -> TargetError:
        return TargetError(f"--metrics {addr!r}: {why}; accepted forms: {METRICS_FORMS}")

    if addr.startswith("["):
        end = addr.find("]")
        if end < 0 or addr[end + 1:end + 2] != ":":
            raise bad("bad IPv6 address")
        host, port_s = addr[1:end], addr[end + 2:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad("bad IPv6 address") from None
    else:
        host, sep, port_s = addr.rpartition(":")
        if not sep:
            raise bad("missing port")
        if host and not _valid_host(host):
            raise bad("invalid host")
        host = host or "0.0.0.0"
    if not (port_s.isdigit() and 0 < int(port_s) < 65536):
        raise bad("bad port")
    return host, int(port_s)
