"""The OTLP configuration as the OpenTelemetry SDKs read it: URL forms, the
OTEL_EXPORTER_OTLP_* environment with its precedence (flag over signal-specific
over generic), headers, OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, and
header values kept out of every message and repr."""

import pytest

from tracer.export import semconv
from tracer.export.sinks import EnvResources, Exports, resource_options
from tracer.export.targets import (
    ExportFlags,
    ExportTarget,
    Headers,
    OtlpOptions,
    TargetError,
    env_target,
    export_targets,
    otlp_options,
    parse_export,
    parse_header_env,
    parse_header_flags,
    redact,
)

TOKEN = "Bearer tok-7f3a9c1e55d2"  # noqa: S105 - a test secret


@pytest.mark.parametrize("url,expected,label", [
    ("otlp-https://api.example.com", ExportTarget("otlp-http", "api.example.com", 4318,
                                                  "/v1/traces", tls=True),
     "otlp-https://api.example.com:4318/v1/traces"),
    ("otlp-https://h:443/otlp/v1/traces", ExportTarget("otlp-http", "h", 443, "/otlp/v1/traces",
                                                       tls=True),
     "otlp-https://h:443/otlp/v1/traces"),
    ("otlp-grpcs://h:443", ExportTarget("otlp-grpc", "h", 443, "", tls=True),
     "otlp-grpcs://h:443"),
    ("otlp-grpc://h", ExportTarget("otlp-grpc", "h", 4317, ""), "otlp-grpc://h:4317"),
])
def test_tls_forms(url, expected, label):
    t = parse_export(url)
    assert t == expected and t.tls == expected.tls
    assert t.label == label


@pytest.mark.parametrize("url", ["otlp-grpcs://h:443/v1/traces", "https://h/v1/traces",
                                 "otlp-httpss://h", "grpcs://h:443"])
def test_bad_tls_forms(url):
    with pytest.raises(TargetError, match="otlp-grpcs:// and otlp-https://"):
        parse_export(url)


def test_url_credentials_are_masked_in_the_error():
    with pytest.raises(TargetError) as e:
        parse_export("otlp-https://user:hunter2secret@h/v1/traces")
    assert "hunter2secret" not in str(e.value)
    assert "<redacted>@h/v1/traces" in str(e.value)


# ---- endpoint and protocol -----------------------------------------------------------

@pytest.mark.parametrize("env,expected", [
    ({}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, None),  # empty = unset (OTel spec)
    # the spec's default protocol is http/protobuf; the generic endpoint is a base
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://api.honeycomb.io"},
     ExportTarget("otlp-http", "api.honeycomb.io", 443, "/v1/traces", tls=True)),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/otlp/"},
     ExportTarget("otlp-http", "collector", 4318, "/otlp/v1/traces")),
    # the signal-specific endpoint is used as is, and wins
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/api/traces"},
     ExportTarget("otlp-http", "b", 443, "/api/traces", tls=True)),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318"},
     ExportTarget("otlp-http", "b", 4318, "/")),
    # gRPC: the scheme decides TLS; no path; the signal-specific protocol wins
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example.com",
      "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
     ExportTarget("otlp-grpc", "otlp.example.com", 443, "", tls=True)),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     ExportTarget("otlp-grpc", "c", 4317, "")),
    # gRPC without a scheme: TLS unless INSECURE
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     ExportTarget("otlp-grpc", "c", 4317, "", tls=True)),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "c", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_INSECURE": "true"},
     ExportTarget("otlp-grpc", "c", 4317, "")),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "false"},
     ExportTarget("otlp-grpc", "c", 4317, "", tls=True)),
])
def test_env_endpoint(env, expected):
    t = env_target(env)
    assert t == expected
    if t is not None:
        assert t.tls == expected.tls


@pytest.mark.parametrize("env,needle", [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "missing the scheme"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://c"}, "unknown scheme"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:99999"}, "bad port"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "c", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_INSECURE": "yes"}, "expected true or false"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://u:pw-secret-99@c"}, "credentials"),
])
def test_bad_env_endpoint_one_line(env, needle):
    with pytest.raises(TargetError) as e:
        env_target(env)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    assert "pw-secret-99" not in msg


def test_flags_export_wins_over_env_endpoint():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://env-host"}
    assert export_targets(["otlp-grpc://flag-host"], ExportFlags(), env) == \
        [ExportTarget("otlp-grpc", "flag-host", 4317, "")]
    # jaeger-json is not OTLP: the environment's receiver is added beside it
    assert [t.label for t in export_targets(["jaeger-json:f"], ExportFlags(), env)] == \
        ["jaeger-json:f", "otlp-https://env-host:443/v1/traces"]
    assert export_targets([], ExportFlags(), {}) == []


# ---- headers, CA, compression, timeout ------------------------------------------------

def test_headers_env_format_percent_decoded():
    h = parse_header_env("Authorization=Bearer%20abc,x-scope-orgid = 42 ,,api-key=a%2Cb",
                         "OTEL_EXPORTER_OTLP_HEADERS")
    assert h.items() == (("authorization", "Bearer abc"), ("x-scope-orgid", "42"),
                         ("api-key", "a,b"))


def test_header_precedence_flag_then_traces_then_generic():
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "a=generic",
           "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=traces"}
    assert otlp_options(ExportFlags(headers=["c=flag"]), env).headers.items() == (("c", "flag"),)
    assert otlp_options(ExportFlags(), env).headers.items() == (("b", "traces"),)
    del env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"]
    assert otlp_options(ExportFlags(), env).headers.items() == (("a", "generic"),)
    assert otlp_options(ExportFlags(), {}).headers.items() == ()


def test_option_precedence():
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/g.pem", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE":
           "/t.pem", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
           "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
           "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/c.pem",
           "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/c.key"}
    o = otlp_options(ExportFlags(), env)
    assert (o.ca_file, o.compression, o.timeout_s, o.client_cert, o.client_key) == \
        ("/t.pem", "", 2.5, "/c.pem", "/c.key")
    o = otlp_options(ExportFlags(ca_file="/f.pem", compression="gzip",
                                 client_cert="/fc.pem", client_key="/fc.key"), env)
    assert (o.ca_file, o.compression, o.client_cert, o.client_key) == \
        ("/f.pem", "gzip", "/fc.pem", "/fc.key")
    assert otlp_options(ExportFlags(), {}) == OtlpOptions()


@pytest.mark.parametrize("flags,env,needle", [
    (ExportFlags(), {"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "expected gzip or none"),
    (ExportFlags(), {"OTEL_EXPORTER_OTLP_TIMEOUT": "1.5"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    (ExportFlags(client_cert="/c.pem"), {}, "needs its key"),
    (ExportFlags(headers=["novalue"]), {}, "--export-header #1: expected KEY=VALUE"),
    (ExportFlags(headers=["ok=1", "bad name=x"]), {}, "--export-header #2"),
    (ExportFlags(headers=["content-type=text/plain"]), {}, "set by the exporter"),
    (ExportFlags(), {"OTEL_EXPORTER_OTLP_HEADERS": "a=1,broken"},
     "OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not KEY=VALUE"),
])
def test_bad_options_one_line(flags, env, needle):
    with pytest.raises(TargetError) as e:
        otlp_options(flags, env)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_options_reach_every_otlp_target_only():
    env = {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization={TOKEN.replace(' ', '%20')}"}
    ts = export_targets(["otlp-grpc://a", "jaeger-json:f", "otlp-https://b"], ExportFlags(), env)
    assert [t.options.headers.items() for t in ts if t.kind != "jaeger-json"] == \
        [(("authorization", TOKEN),)] * 2
    assert ts[1].options == OtlpOptions()


def test_tls_and_header_flags_need_an_otlp_or_tls_target():
    with pytest.raises(TargetError, match="apply to OTLP exports"):
        export_targets(["jaeger-json:f"], ExportFlags(headers=["a=b"]), {})
    with pytest.raises(TargetError, match="apply to TLS exports"):
        export_targets(["otlp-http://h"], ExportFlags(ca_file="/ca.pem"), {})
    # the environment's CA with a plaintext endpoint is ignored, as the SDKs do
    assert export_targets(["otlp-http://h"], ExportFlags(),
                          {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/ca.pem"})[0].tls is False


# ---- secrets -----------------------------------------------------------------------------

def test_header_values_never_in_repr_or_errors():
    h = parse_header_flags([f"authorization={TOKEN}", "x-api-key=k3y-0123456789"])
    t = export_targets(["otlp-https://h"], ExportFlags(headers=[f"authorization={TOKEN}",
                                                                "x-api-key=k3y-0123456789"]),
                       {})[0]
    for text in (repr(h), str(h), repr(t), repr(t.options), str(t.options), t.label):
        assert "tok-7f3a9c1e55d2" not in text and "k3y-0123456789" not in text
    assert "authorization=<redacted>" in repr(t.options)
    # a bad value is refused without showing it
    with pytest.raises(TargetError) as e:
        parse_header_flags(["authorization=Bearer tok\tbad-secret-value"])
    assert "bad-secret-value" not in str(e.value)
    with pytest.raises(TargetError) as e:
        parse_header_env("authorization Bearer tok-7f3a9c1e55d2", "OTEL_EXPORTER_OTLP_HEADERS")
    assert "tok-7f3a9c1e55d2" not in str(e.value)


def test_redact_hides_value_and_token_word():
    secrets = Headers([("authorization", TOKEN), ("x-scope-orgid", "1")]).secrets()
    assert redact(f"server said: bad token tok-7f3a9c1e55d2 in '{TOKEN}'", secrets) == \
        "server said: bad token <redacted> in '<redacted>'"
    assert redact("org 1 of 10", secrets) == "org 1 of 10"  # short values are no secret


# ---- resource ------------------------------------------------------------------------------

def test_resource_env_parsing():
    assert resource_options({}) == ("", {})
    assert resource_options({"OTEL_SERVICE_NAME": " checkout ",
                             "OTEL_RESOURCE_ATTRIBUTES":
                             "deployment.environment=prod, team=a%2Cb,,"}) == \
        ("checkout", {"deployment.environment": "prod", "team": "a,b"})
    with pytest.raises(ValueError, match="OTEL_RESOURCE_ATTRIBUTES: entry 2"):
        resource_options({"OTEL_RESOURCE_ATTRIBUTES": "a=1,b"})


def test_resource_precedence():
    attrs = {"service.name": "from-attrs", "deployment.environment": "prod",
             "process.pid": "1", "host.name": "node-7"}
    r = EnvResources({"python3": "mapped"}, "from-env", attrs)
    assert r.of(10, "python3") == {"service.name": "mapped", "process.pid": 10,
                                   "process.executable.name": "python3", "host.name": "node-7",
                                   "deployment.environment": "prod"}
    assert r.service(11, "node") == "from-env"  # OTEL_SERVICE_NAME over the attributes
    assert EnvResources(None, "", attrs).service(12, "node") == "from-attrs"
    assert EnvResources(None, "", {"k": "v"}).service(13, "node") == "node"


def test_exports_use_env_resources():
    e = Exports([], resource=("svc", {"k": "v"}))
    assert isinstance(e.resources, EnvResources) and e.resources.service(1, "x") == "svc"
    assert type(Exports([], resource=("", {})).resources) is semconv.Resources


# ---- the command line ----------------------------------------------------------------------

def test_cli_bad_header_exit_2_one_line_secret_free():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "tracer", "run", "--export", "otlp-https://h",
                        "--export-header", "authorization=Bearer\ttok-7f3a9c1e55d2"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("tracer: --export-header #1")
    assert "tok-7f3a9c1e55d2" not in p.stderr and "Traceback" not in p.stderr


def test_cli_unloadable_ca_is_a_usage_error(tmp_path, monkeypatch):
    """TLS files are loaded when the exporters are built: a missing CA is one
    line (UsageError, exit 2), not a traceback."""
    from tracer import cli

    for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    args = cli.build_parser().parse_args(
        ["run", "--export", "otlp-https://127.0.0.1:4318", "--export-ca",
         str(tmp_path / "missing.pem")])
    cli._check_args(args)

    class Writer:
        closed = False

        def close(self):
            self.closed = True

    w = Writer()
    with pytest.raises(cli.UsageError) as e:
        cli._open_exports(args, w)
    assert str(e.value) == (f"otlp-https://127.0.0.1:4318/v1/traces: CA file "
                            f"'{tmp_path / 'missing.pem'}': No such file or directory "
                            "(--export-ca, OTEL_EXPORTER_OTLP_CERTIFICATE): give a PEM bundle")
    assert w.closed
