"""Export configuration: `--export URL`, the `--export-*` flags, the
OpenTelemetry `OTEL_EXPORTER_OTLP_*` environment and `--metrics HOST:PORT`.

Strict on purpose: a typo in an export URL must stop the tracer at start
(exit 2), not make it trace for hours into nowhere. Nothing heavy is imported
here; the exporters themselves are imported only when configured.

Precedence is the OpenTelemetry SDK's: a flag replaces the environment, a
signal-specific variable (`OTEL_EXPORTER_OTLP_TRACES_*`) replaces the generic
one, and a header list replaces another whole (never merged key by key).
Header values are secrets: they appear in no message and no repr.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

EXPORT_FORMS = ("otlp-grpc://HOST[:PORT] (default port 4317), "
                "otlp-http://HOST[:PORT][/PATH] (default :4318/v1/traces), "
                "otlp-grpcs:// and otlp-https:// (the same over TLS), jaeger-json:FILE")
METRICS_FORMS = "HOST:PORT, :PORT or [IPV6]:PORT"

DEFAULT_PORTS = {"otlp-grpc": 4317, "otlp-http": 4318}
TLS_SCHEMES = {"otlp-grpcs": "otlp-grpc", "otlp-https": "otlp-http"}
OTLP_HTTP_PATH = "/v1/traces"
TIMEOUT_S = 10.0
COMPRESSIONS = ("gzip", "none")
PROTOCOLS = {"grpc": "otlp-grpc", "http/protobuf": "otlp-http"}

REDACTED = "<redacted>"
# header names: an HTTP token, lower case (gRPC metadata keys are)
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
# set by the exporters themselves
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "content-encoding", "host",
                               "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"})


class TargetError(ValueError):
    """str() is one line naming what is wrong and the accepted forms; never a secret."""


class Headers:
    """Export headers (name, value) in order. Values are secrets (API keys,
    bearer tokens): repr() and str() show the names only."""

    __slots__ = ("_items",)

    def __init__(self, items=()) -> None:
        self._items = tuple((str(k), str(v)) for k, v in items)

    def items(self) -> tuple[tuple[str, str], ...]:
        return self._items

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return "Headers(" + ", ".join(f"{k}={REDACTED}" for k, _ in self._items) + ")"

    __str__ = __repr__

    def secrets(self) -> list[str]:
        """What redact() hides: each value and each of its words long enough to
        be a credential (the token of 'Bearer TOKEN', 'Basic B64')."""
        out = set()
        for _, v in self._items:
            if len(v) >= 4:
                out.add(v)
            out.update(w for w in v.split() if len(w) >= 8)
        return sorted(out, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


@dataclass(frozen=True)
class OtlpOptions:
    """How to reach an OTLP receiver, beyond its URL. TLS itself comes from
    the target's scheme; the files are read when the exporter is built."""
    headers: Headers = field(default_factory=Headers)
    ca_file: str = ""  # PEM bundle trusted for the receiver; "" = the system's CAs
    client_cert: str = ""  # PEM, for mTLS (with client_key)
    client_key: str = ""
    compression: str = ""  # "" | "gzip"
    timeout_s: float = TIMEOUT_S


@dataclass(frozen=True)
class ExportTarget:
    kind: str  # "otlp-grpc" | "otlp-http" | "jaeger-json"
    host: str = ""
    port: int = 0
    path: str = ""  # HTTP path (otlp-http) or output file (jaeger-json)
    tls: bool = False
    options: OtlpOptions = field(default_factory=OtlpOptions, compare=False)

    @property
    def label(self) -> str:
        """Stable name for counters and metrics labels (no secret in it)."""
        if self.kind == "jaeger-json":
            return f"jaeger-json:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def scheme(self) -> str:
        return self.kind + "s" if self.tls else self.kind


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


def _shown(url: str) -> str:
    """The URL as a message may show it: user info (a password) masked."""
    scheme, sep, rest = url.partition("://")
    netloc = rest.split("/", 1)[0]
    if sep and "@" in netloc:
        return url.replace(netloc, REDACTED + "@" + netloc.rpartition("@")[2], 1)
    return url


def parse_export(url: str) -> ExportTarget:
    def bad(why: str) -> TargetError:
        return TargetError(f"--export {_shown(url)!r}: {why}; accepted forms: {EXPORT_FORMS}")

    if url.startswith("jaeger-json:"):
        path = url[len("jaeger-json:"):]
        if not path or path.startswith("//"):
            raise bad("missing the output file")
        return ExportTarget("jaeger-json", path=path)
    scheme, sep, _ = url.partition("://")
    kind = TLS_SCHEMES.get(scheme, scheme)
    if not sep or kind not in DEFAULT_PORTS:
        raise bad("unknown scheme")
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise bad("query, fragment and credentials are not supported "
                  "(credentials go in --export-header)")
    try:
        port = parts.port  # ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise bad("bad port") from None
    host = parts.hostname or ""
    if not _valid_host(host):
        raise bad("missing or invalid host")
    if port == 0:
        raise bad("bad port")
    port = port or DEFAULT_PORTS[kind]
    path = parts.path
    if kind == "otlp-grpc":
        if path not in ("", "/"):
            raise bad(f"{scheme} takes no path")
        path = ""
    else:
        path = path or OTLP_HTTP_PATH
    return ExportTarget(kind, host, port, path, tls=scheme in TLS_SCHEMES)


# ---- headers ------------------------------------------------------------------------

def _header(name: str, value: str, where: str) -> tuple[str, str]:
    """One checked header; `where` names it in errors (never with its value)."""
    name = name.strip().lower()
    if not _HEADER_NAME.fullmatch(name):
        raise TargetError(f"{where}: the header name is not an HTTP token (letters, digits, "
                          "'-'); expected KEY=VALUE")
    if name in _RESERVED_HEADERS or name.endswith("-bin"):
        raise TargetError(f"{where}: header {name!r} is set by the exporter itself")
    value = value.strip()
    if not value or not all(" " <= c <= "~" for c in value):
        raise TargetError(f"{where}: the value of header {name!r} is empty or not printable "
                          "ASCII (the value is not shown)")
    return name, value


def parse_header_flags(items: list[str]) -> Headers:
    """['authorization=Bearer x', ...] from repeated --export-header (values taken as typed)."""
    out = []
    for i, item in enumerate(items, 1):
        name, sep, value = item.partition("=")
        if not sep:
            raise TargetError(f"--export-header #{i}: expected KEY=VALUE (the argument is "
                              "not shown: it may hold a secret)")
        out.append(_header(name, value, f"--export-header #{i}"))
    return Headers(out)


def parse_header_env(raw: str, var: str) -> Headers:
    """The OTel format: 'k1=v1,k2=v2', each part percent-decoded (W3C baggage style)."""
    out = []
    for i, item in enumerate(raw.split(","), 1):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise TargetError(f"{var}: entry {i} is not KEY=VALUE (the value is not shown: "
                              "it may hold a secret)")
        out.append(_header(unquote(name), unquote(value), f"{var} entry {i}"))
    return Headers(out)


# ---- the OTEL_* environment -------------------------------------------------------------

def _env(environ, name: str) -> tuple[str, str] | None:
    """(variable, value) of OTEL_EXPORTER_OTLP_TRACES_<name>, else of
    OTEL_EXPORTER_OTLP_<name>; empty values count as unset (OTel spec)."""
    for var in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = environ.get(var, "").strip()
        if value:
            return var, value
    return None


def _env_bool(environ, name: str) -> bool:
    got = _env(environ, name)
    if got is None:
        return False
    var, value = got
    if value.lower() not in ("true", "false"):
        raise TargetError(f"{var}={value!r}: expected true or false")
    return value.lower() == "true"


def env_target(environ) -> ExportTarget | None:
    """The OTLP receiver named by OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT and
    _PROTOCOL, as the OTel SDKs read them; None when no endpoint is set.
    - protocol: http/protobuf (the spec's default) or grpc;
    - TRACES_ENDPOINT is used as is (path '/' if it has none); the generic
      ENDPOINT is a base URL to which OTLP/HTTP appends v1/traces;
    - http:// is plaintext, https:// is TLS; a gRPC endpoint without a scheme
      is TLS unless OTEL_EXPORTER_OTLP_[TRACES_]INSECURE=true; a gRPC path is
      ignored."""
    got = _env(environ, "ENDPOINT")
    if got is None:
        return None
    var, raw = got
    proto_var, proto = _env(environ, "PROTOCOL") or ("", "http/protobuf")
    kind = PROTOCOLS.get(proto)
    if kind is None:
        raise TargetError(f"{proto_var}={proto!r}: expected grpc or http/protobuf "
                          "(http/json is not supported)")

    def bad(why: str) -> TargetError:
        return TargetError(f"{var}={_shown(raw)!r}: {why}; expected http[s]://HOST[:PORT][/PATH]"
                           + (" or HOST:PORT" if kind == "otlp-grpc" else ""))

    url = raw
    if "://" not in raw:
        if kind != "otlp-grpc":
            raise bad("missing the scheme")
        url = ("http://" if _env_bool(environ, "INSECURE") else "https://") + raw
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise bad("unknown scheme")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise bad("query, fragment and credentials are not supported "
                  "(credentials go in OTEL_EXPORTER_OTLP_HEADERS)")
    try:
        port = parts.port
    except ValueError:
        raise bad("bad port") from None
    host = parts.hostname or ""
    if not _valid_host(host):
        raise bad("missing or invalid host")
    if port == 0:
        raise bad("bad port")
    tls = parts.scheme == "https"
    if port is None:  # a URL's own default, or the OTLP port for a bare HOST
        port = DEFAULT_PORTS[kind] if "://" not in raw else (443 if tls else 80)
    path = ""
    if kind == "otlp-http":
        path = parts.path
        if var.startswith("OTEL_EXPORTER_OTLP_TRACES_"):
            path = path or "/"
        else:
            path = path.rstrip("/") + OTLP_HTTP_PATH
    return ExportTarget(kind, host, port, path, tls=tls)


@dataclass
class ExportFlags:
    """The --export-* flags of `run` (empty: not given)."""
    headers: list[str] = field(default_factory=list)
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    compression: str = ""


def otlp_options(flags: ExportFlags, environ) -> OtlpOptions:
    headers = parse_header_flags(flags.headers) if flags.headers else None
    if headers is None:
        got = _env(environ, "HEADERS")
        headers = parse_header_env(got[1], got[0]) if got else Headers()

    def pick(flag: str, name: str) -> str:
        if flag:
            return flag
        got = _env(environ, name)
        return got[1] if got else ""

    compression = pick(flags.compression, "COMPRESSION").lower() or "none"
    if compression not in COMPRESSIONS:
        var = "--export-compression" if flags.compression else _env(environ, "COMPRESSION")[0]
        raise TargetError(f"{var} {compression!r}: expected gzip or none")
    timeout_s = TIMEOUT_S
    got = _env(environ, "TIMEOUT")
    if got is not None:
        if not got[1].isdigit() or int(got[1]) <= 0:
            raise TargetError(f"{got[0]}={got[1]!r}: expected a positive integer (ms)")
        timeout_s = int(got[1]) / 1000
    cert, key = pick(flags.client_cert, "CLIENT_CERTIFICATE"), pick(flags.client_key, "CLIENT_KEY")
    if bool(cert) != bool(key):
        raise TargetError("a client certificate needs its key and a key its certificate "
                          "(--export-client-cert with --export-client-key, or "
                          "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE with _CLIENT_KEY)")
    return OtlpOptions(headers=headers, ca_file=pick(flags.ca_file, "CERTIFICATE"),
                       client_cert=cert, client_key=key,
                       compression="" if compression == "none" else compression,
                       timeout_s=timeout_s)


def export_targets(urls: list[str], flags: ExportFlags, environ) -> list[ExportTarget]:
    """Every export of a run: the --export URLs, or (when none of them is OTLP)
    the receiver of the OTEL_EXPORTER_OTLP_* environment; OTLP targets carry
    the options of the flags and the environment."""
    targets = [parse_export(u) for u in urls]
    if not any(t.kind != "jaeger-json" for t in targets):
        t = env_target(environ)
        if t is not None:
            targets.append(t)
    otlp = [t for t in targets if t.kind != "jaeger-json"]
    if not otlp:
        if flags.headers or flags.ca_file or flags.client_cert or flags.client_key \
                or flags.compression:
            raise TargetError("the --export-* options apply to OTLP exports: add an "
                              "--export otlp-... URL or set OTEL_EXPORTER_OTLP_ENDPOINT")
        return targets
    opts = otlp_options(flags, environ)
    if (flags.ca_file or flags.client_cert) and not any(t.tls for t in otlp):
        raise TargetError("--export-ca and --export-client-cert apply to TLS exports only: "
                          "use otlp-https:// or otlp-grpcs://")
    return [dataclasses.replace(t, options=opts) if t.kind != "jaeger-json" else t
            for t in targets]


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
