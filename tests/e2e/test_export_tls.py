"""OTLP to receivers that demand TLS and an auth header, end to end: the real
tracer CLI (privileges dropped, seccomp on), a real HTTP server and client,
and in this process an HTTPS OTLP/HTTP endpoint and a grpc server with
ssl_server_credentials, both with a test CA and a bearer token.

- right token: exactly the 46 spans of 23 exchanges arrive (gzip, mTLS);
- wrong token: one stderr line naming the endpoint and 401/UNAUTHENTICATED,
  `export_batches_refused` equal to the batches the receiver refused (none
  retried), no traceback, exit 2 (the environment is wrong);
- a server the CA does not vouch for: one line, TLS handshake failed, exit 2;
- the OTEL_* environment alone (endpoint, headers, CA, protocol, service
  name, resource attributes) configures the export;
- the token appears nowhere: stderr, the summary, the spans, /metrics.
"""

from __future__ import annotations

import os
import time

import pytest
import requests

from harness.receivers import attrs
from tests.e2e.test_export import check_exported, send
from tests.e2e.test_http1 import plan
from tests.e2e.tracing import TracerRun, free_port, py_server
from tests.kernel.conftest import require
from tests.unit.otlp_tls import TlsGrpcReceiver, TlsHttpReceiver, make_pki

SLEEP_MS = 5
SECRET = "tok-e2e-4b9d71c0aa3f"  # noqa: S105 - a test secret
TOKEN = f"Bearer {SECRET}"
WRONG_SECRET = "tok-e2e-wrong-77e1f0"  # noqa: S105
OTEL_VARS = [v for v in os.environ if v.startswith("OTEL_")]


@pytest.fixture(autouse=True)
def _needs_kernel(monkeypatch):
    require("btf", "ringbuf", "tracepoint_syscalls")
    for v in OTEL_VARS:  # only what each test sets
        monkeypatch.delenv(v)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def scrape(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def secret_free(tr: TracerRun, metrics: str, *secrets: str) -> None:
    out = tr.out.read_text()
    summary = (tr.out.parent / (tr.out.name + ".summary.json")).read_text()
    for s in secrets:
        for where, text in (("stderr", tr.stderr), ("summary", summary), ("spans", out),
                            ("/metrics", metrics)):
            assert s not in text, f"the secret is in {where}"


def lines_with(text: str, *needles: str) -> list[str]:
    return [ln for ln in text.splitlines() if all(n in ln for n in needles)]


@pytest.mark.parametrize("receiver,scheme,mtls", [
    (TlsHttpReceiver, "otlp-https", False), (TlsGrpcReceiver, "otlp-grpcs", True)],
    ids=["https", "grpcs-mtls"])
def test_tls_auth_23_exact(tmp_path, pki, receiver, scheme, mtls):
    port, mport = free_port(), free_port()
    mtls_args = ["--export-client-cert", pki.client_cert, "--export-client-key",
                 pki.client_key] if mtls else []
    with receiver(pki, TOKEN, mtls=mtls) as rx, py_server(port, SLEEP_MS) as srv:
        url = f"{scheme}://127.0.0.1:{rx.port}"
        with TracerRun(tmp_path, "--port", str(port), "--export", url,
                       "--export-ca", pki.ca, "--export-header", f"Authorization={TOKEN}",
                       "--export-compression", "gzip", "--metrics", f"127.0.0.1:{mport}",
                       *mtls_args) as tr:
            send(port, plan())
            rx.wait_spans(46)
            metrics = scrape(mport)
        received = rx.spans()
    assert tr.returncode == 0, tr.stderr
    assert len(tr.spans) == 46
    check_exported(received, tr.spans, srv.pid)
    assert rx.refused == 0
    if receiver is TlsHttpReceiver:
        assert set(rx.encodings) == {"gzip"}
    label = url + ("/v1/traces" if scheme == "otlp-https" else "")
    sm = tr.summary
    assert list(sm["exporters"]) == [label]
    assert (sm["spans_exported"], sm["spans_export_failed"], sm["spans_export_dropped"],
            sm["export_batches_refused"]) == (46, 0, 0, 0)
    assert f'exporter="{label}"' in metrics
    secret_free(tr, metrics, SECRET)


@pytest.mark.parametrize("receiver,scheme,cause", [
    (TlsHttpReceiver, "otlp-https", "HTTP 401 Unauthorized"),
    (TlsGrpcReceiver, "otlp-grpcs", "UNAUTHENTICATED")], ids=["https", "grpcs"])
def test_wrong_token_one_line_counted_exit_2(tmp_path, pki, receiver, scheme, cause,
                                             monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")  # several batches
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    port, mport = free_port(), free_port()
    with receiver(pki, TOKEN) as rx, py_server(port, SLEEP_MS):
        url = f"{scheme}://127.0.0.1:{rx.port}"
        with TracerRun(tmp_path, "--port", str(port), "--export", url, "--export-ca", pki.ca,
                       "--export-header", f"authorization=Bearer {WRONG_SECRET}",
                       "--metrics", f"127.0.0.1:{mport}") as tr:
            send(port, plan())
            deadline = time.monotonic() + 15
            while rx.refused * 10 < 46 and time.monotonic() < deadline:
                time.sleep(0.1)
            metrics = scrape(mport)
        refused = rx.refused
    label = url + ("/v1/traces" if scheme == "otlp-https" else "")
    assert tr.returncode == 2
    assert "Traceback" not in tr.stderr
    assert len(lines_with(tr.stderr, label, cause)) == 1, tr.stderr
    (line,) = lines_with(tr.stderr, label)  # nothing else about this endpoint
    assert "refuses the credentials" in line and "not retried" in line
    sm = tr.summary
    assert len(tr.spans) == 46
    # every batch was sent once, refused, and counted
    assert refused >= 5  # 46 spans in batches of at most 10
    assert sm["export_batches_refused"] == sm["exporters"][label]["export_batches_refused"] == \
        refused
    assert (sm["spans_exported"], sm["spans_export_failed"], sm["spans_export_dropped"],
            sm["export_retries"]) == (0, 46, 0, 0)
    assert rx.spans() == []
    secret_free(tr, metrics, WRONG_SECRET)


def test_untrusted_receiver_one_line_exit_2(tmp_path, pki):
    port = free_port()
    with TlsGrpcReceiver(pki, TOKEN) as rx, py_server(port, SLEEP_MS):
        url = f"otlp-grpcs://127.0.0.1:{rx.port}"
        with TracerRun(tmp_path, "--port", str(port), "--export", url,
                       "--export-ca", pki.other_ca,
                       "--export-header", f"authorization={TOKEN}") as tr:
            send(port, plan(5))
    assert tr.returncode == 2
    (line,) = lines_with(tr.stderr, url)
    assert "TLS handshake failed: CERTIFICATE_VERIFY_FAILED" in line and "--export-ca" in line
    # grpc-core's own handshake log is kept quiet
    assert "ssl_transport_security" not in tr.stderr
    assert "Traceback" not in tr.stderr
    assert tr.summary["export_batches_refused"] >= 1 and tr.summary["spans_export_failed"] == 10
    assert rx.spans() == [] and rx.refused == 0
    secret_free(tr, "", SECRET)


@pytest.mark.parametrize("receiver,env", [
    (TlsHttpReceiver, {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:{port}"}),
    (TlsGrpcReceiver, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",  # overridden
                       "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://127.0.0.1:{port}",
                       "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
                       "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"})],
    ids=["http-protobuf", "grpc"])
def test_otel_environment_only(tmp_path, pki, monkeypatch, receiver, env):
    port = free_port()
    with receiver(pki, TOKEN) as rx, py_server(port, SLEEP_MS):
        for k, v in env.items():
            monkeypatch.setenv(k, v.format(port=rx.port))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS",
                           "authorization=" + TOKEN.replace(" ", "%20"))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES",
                           "deployment.environment=e2e,service.namespace=shop")
        with TracerRun(tmp_path, "--port", str(port)) as tr:
            send(port, plan())
            rx.wait_spans(46)
        received = rx.spans()
    assert tr.returncode == 0, tr.stderr
    assert len(tr.spans) == 46 and len(received) == 46, tr.stderr
    assert {s.span_id.hex() for _, s in received} == {s["span_id"] for s in tr.spans}
    for res, _ in received:
        assert res["service.name"] == "checkout"
        assert (res["deployment.environment"], res["service.namespace"]) == ("e2e", "shop")
        assert res["process.pid"] in {s["pid"] for s in tr.spans}
    assert sorted(attrs(s.attributes)["url.path"] for _, s in received
                  if s.kind == 2) == sorted(p for _, p, _, _ in plan())  # SERVER
    assert list(tr.summary["exporters"]) == [
        f"otlp-https://127.0.0.1:{rx.port}/v1/traces" if receiver is TlsHttpReceiver
        else f"otlp-grpcs://127.0.0.1:{rx.port}"]
    assert tr.summary["spans_exported"] == 46
    secret_free(tr, "", SECRET)
