"""--export URL and --metrics HOST:PORT parsing: strict, one-line errors."""

import pytest

from tracer.export.targets import ExportTarget, TargetError, parse_export, parse_metrics


@pytest.mark.parametrize("url,expected", [
    ("otlp-grpc://collector:4317", ExportTarget("otlp-grpc", "collector", 4317, "")),
    ("otlp-grpc://127.0.0.1", ExportTarget("otlp-grpc", "127.0.0.1", 4317, "")),
    ("otlp-grpc://[::1]:5317/", ExportTarget("otlp-grpc", "::1", 5317, "")),
    ("otlp-http://h:4318/v1/traces", ExportTarget("otlp-http", "h", 4318, "/v1/traces")),
    ("otlp-http://h", ExportTarget("otlp-http", "h", 4318, "/v1/traces")),
    ("otlp-http://tempo.local:80/otlp/v1/traces",
     ExportTarget("otlp-http", "tempo.local", 80, "/otlp/v1/traces")),
    ("jaeger-json:/tmp/t.json", ExportTarget("jaeger-json", path="/tmp/t.json")),
    ("jaeger-json:rel.json", ExportTarget("jaeger-json", path="rel.json")),
])
def test_good_urls(url, expected):
    assert parse_export(url) == expected


@pytest.mark.parametrize("url", [
    "", "localhost:4317", "http://h:4318/v1/traces", "otlp://h:4317", "otlp-grpc://",
    "otlp-grpc://:4317", "otlp-grpc://h:0", "otlp-grpc://h:70000", "otlp-grpc://h:x",
    "otlp-grpc://h:4317/v1/traces", "otlp-http://h:4318/v1/traces?x=1",
    "otlp-http://user:pw@h:4318", "otlp-grpc://bad_host!:4317", "jaeger-json:",
    "jaeger-json://h", "OTLP-GRPC://h:4317",
])
def test_bad_urls_name_the_accepted_forms(url):
    with pytest.raises(TargetError) as e:
        parse_export(url)
    msg = str(e.value)
    assert "\n" not in msg
    assert "otlp-grpc://" in msg and "otlp-http://" in msg and "jaeger-json:FILE" in msg


def test_label_is_stable():
    assert parse_export("otlp-grpc://h").label == "otlp-grpc://h:4317"
    assert parse_export("otlp-http://[::1]").label == "otlp-http://[::1]:4318/v1/traces"
    assert parse_export("jaeger-json:f").label == "jaeger-json:f"


@pytest.mark.parametrize("addr,expected", [
    (":9464", ("0.0.0.0", 9464)),
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("localhost:1", ("localhost", 1)),
    ("[::1]:9464", ("::1", 9464)),
])
def test_metrics_addr(addr, expected):
    assert parse_metrics(addr) == expected


@pytest.mark.parametrize("addr", ["9464", ":", ":0", ":65536", "h:x", "[::1]9464", "[zz]:1",
                                  "bad host:1"])
def test_bad_metrics_addr(addr):
    with pytest.raises(TargetError, match="HOST:PORT"):
        parse_metrics(addr)
