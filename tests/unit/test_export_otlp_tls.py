"""OTLP over TLS with an auth header, against real receivers in this process
(an HTTPS server and a grpc server with ssl_server_credentials, a test CA
made by openssl): exact delivery with the right token, gzip, mTLS, system
CAs; a wrong token or a failed handshake refused at once (no retry), counted
per batch and said in one line without the secret."""

import logging

import grpc
import pytest

from tests.unit.export_spans import make_span
from tests.unit.otlp_tls import TlsGrpcReceiver, TlsHttpReceiver, make_pki
from tracer.export import otlp, semconv
from tracer.export.pipeline import ExportPipeline, RefusedError, RetryableError
from tracer.export.targets import Headers, OtlpOptions, TargetError

RES = semconv.Resources(host="testhost")
TOKEN = "Bearer tok-5d1e2a9b7c44"  # noqa: S105 - a test secret
WRONG = "Bearer tok-wrong-0c9e8f"  # noqa: S105
SECRETS = ("tok-5d1e2a9b7c44", "tok-wrong-0c9e8f")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def opts(pki, token=TOKEN, **over) -> OtlpOptions:
    return OtlpOptions(**{"headers": Headers([("authorization", token)]), "ca_file": pki.ca,
                          **over})


def http(pki, rx, **kw):
    return otlp.HttpExporter("127.0.0.1", rx.port, "/v1/traces", otlp.Encoder(RES), 5.0,
                             tls=True, options=opts(pki, **kw))


def grpcs(pki, rx, **kw):
    return otlp.GrpcExporter("127.0.0.1", rx.port, otlp.Encoder(RES), 5.0, tls=True,
                             options=opts(pki, **kw))


TRANSPORTS = [(TlsHttpReceiver, http), (TlsGrpcReceiver, grpcs)]
IDS = ["http", "grpc"]


def no_secret(text: str) -> None:
    for s in SECRETS:
        assert s not in text


@pytest.mark.parametrize("receiver,exporter", TRANSPORTS, ids=IDS)
@pytest.mark.parametrize("compression", ["", "gzip"])
def test_delivers_with_token(pki, receiver, exporter, compression):
    spans = [make_span() for _ in range(23)]
    with receiver(pki, TOKEN) as rx:
        exp = exporter(pki, rx, compression=compression)
        assert exp.export(spans) == 0
        assert exp.export(spans[:2]) == 0  # the connection is reused
        got = rx.wait_spans(25)
        exp.close()
    assert [s.span_id.hex() for _, s in got] == [s.span_id for s in spans + spans[:2]]
    assert rx.refused == 0
    if receiver is TlsHttpReceiver:
        assert rx.encodings == [compression] * 2
    else:
        assert [md["authorization"] for md in rx.metadata] == [TOKEN] * 2


def test_grpc_channel_compression(pki):
    assert grpcs(pki, TlsGrpcReceiver(pki, TOKEN), compression="gzip")._compression == \
        grpc.Compression.Gzip
    assert grpcs(pki, TlsGrpcReceiver(pki, TOKEN))._compression is None


@pytest.mark.parametrize("receiver,exporter,cause", [
    (TlsHttpReceiver, http, "HTTP 401 Unauthorized"),
    (TlsGrpcReceiver, grpcs, "UNAUTHENTICATED: invalid credentials")], ids=IDS)
def test_wrong_token_refused_not_retryable(pki, receiver, exporter, cause):
    with receiver(pki, TOKEN) as rx:
        exp = exporter(pki, rx, token=WRONG)
        with pytest.raises(RefusedError) as e:
            exp.export([make_span()])
        exp.close()
    msg = str(e.value)
    assert not isinstance(e.value, RetryableError)
    assert msg.startswith(f"{exp.name}: {cause}: the receiver refuses the credentials")
    assert "--export-header" in msg and "\n" not in msg
    no_secret(msg)
    assert rx.refused == 1


@pytest.mark.parametrize("receiver,exporter,cause", [
    (TlsHttpReceiver, http, "unable to get local issuer certificate"),
    (TlsGrpcReceiver, grpcs, "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate")],
    ids=IDS)
def test_untrusted_server_is_a_refused_handshake(pki, receiver, exporter, cause):
    with receiver(pki, TOKEN) as rx:
        exp = exporter(pki, rx, ca_file=pki.other_ca)
        with pytest.raises(RefusedError) as e:
            exp.export([make_span()])
        exp.close()
    assert str(e.value).startswith(f"{exp.name}: TLS handshake failed: {cause}: check")
    assert "--export-ca" in str(e.value)
    assert rx.refused == 0 and rx.spans() == []  # nothing was sent


@pytest.mark.parametrize("receiver,exporter", TRANSPORTS, ids=IDS)
def test_system_cas_are_the_default(pki, receiver, exporter, monkeypatch):
    """No CA given: the system's bundle (OpenSSL's default file, SSL_CERT_FILE
    honoured) for both transports; the test CA is not in it."""
    with receiver(pki, TOKEN) as rx:
        exp = exporter(pki, rx, ca_file="")
        with pytest.raises(RefusedError, match="TLS handshake failed"):
            exp.export([make_span()])
        exp.close()
        monkeypatch.setenv("SSL_CERT_FILE", pki.ca)
        exp = exporter(pki, rx, ca_file="")
        assert exp.export([make_span()]) == 0
        exp.close()


@pytest.mark.parametrize("receiver,exporter,without", [
    # TLS 1.3: the server checks the client after the client's handshake ends,
    # so the client reads the alert, or an EOF if the server closed first
    (TlsHttpReceiver, http, ((RefusedError, RetryableError),
                             "TLS handshake failed: TLSV13_ALERT_CERTIFICATE_REQUIRED|EOF")),
    # grpc-core reports only that the server closed the socket: retried
    (TlsGrpcReceiver, grpcs, (RetryableError, "UNAVAILABLE"))], ids=IDS)
def test_mtls(pki, receiver, exporter, without):
    with receiver(pki, TOKEN, mtls=True) as rx:
        exp = exporter(pki, rx, client_cert=pki.client_cert, client_key=pki.client_key)
        assert exp.export([make_span(), make_span()]) == 0
        exp.close()
        assert len(rx.spans()) == 2
        exp = exporter(pki, rx)  # no client certificate
        with pytest.raises(without[0], match=without[1]):
            exp.export([make_span()])
        exp.close()
    assert len(rx.spans()) == 2


@pytest.mark.parametrize("exporter", [http, grpcs], ids=IDS)
def test_unloadable_tls_files_are_one_line(pki, exporter, tmp_path):
    rx = TlsHttpReceiver(pki, TOKEN)  # not started: only the port is read
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for over, needle in [({"ca_file": str(tmp_path / "missing.pem")}, "No such file"),
                         ({"ca_file": str(tmp_path / "junk.pem")}, "CA file"),
                         ({"client_cert": pki.client_cert, "client_key": pki.server_key},
                          "client certificate")]:
        with pytest.raises(TargetError) as e:
            exporter(pki, rx, **over)
        assert needle in str(e.value) and "\n" not in str(e.value)


class EchoingGrpcReceiver(TlsGrpcReceiver):
    """A receiver that quotes the credentials back in its error details."""

    def Export(self, request, context):  # noqa: N802
        md = dict(context.invocation_metadata())
        context.abort(grpc.StatusCode.PERMISSION_DENIED, f"key {md['authorization']} revoked")


def test_echoed_secret_is_redacted(pki):
    with EchoingGrpcReceiver(pki, TOKEN) as rx:
        exp = grpcs(pki, rx, token=WRONG)
        with pytest.raises(RefusedError) as e:
            exp.export([make_span()])
        exp.close()
    assert "PERMISSION_DENIED: key <redacted> revoked" in str(e.value)
    no_secret(str(e.value))


@pytest.mark.parametrize("receiver,exporter,cause", [
    (TlsHttpReceiver, http, "HTTP 401"), (TlsGrpcReceiver, grpcs, "UNAUTHENTICATED")], ids=IDS)
def test_pipeline_counts_each_refused_batch_once(pki, receiver, exporter, cause, caplog):
    """23 spans in batches of 10: 3 batches, each sent once and refused; one
    warning line for the outage, naming the endpoint and the cause."""
    with receiver(pki, TOKEN) as rx, caplog.at_level(logging.DEBUG, logger="tracer.export"):
        exp = exporter(pki, rx, token=WRONG)
        pipe = ExportPipeline(exp, name="x", batch_size=10, interval_s=0.05, max_retry_s=30)
        pipe.start()
        for _ in range(23):
            pipe.submit(make_span())
        pipe.close(timeout=10)
    c = pipe.counters()
    assert rx.refused == 3  # never retried
    assert (c["export_batches_refused"], c["export_batches_failed"], c["export_retries"]) == \
        (3, 3, 0)
    assert (c["spans_export_failed"], c["spans_exported"], c["spans_export_dropped"]) == (23, 0, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{exp.name}: {cause}")
    assert "not retried" in warnings[0]
    no_secret(caplog.text)


def test_unexpected_exporter_error_is_counted_not_a_traceback(pki, caplog, capsys):
    """An exception outside ExportError (here the LookupError getaddrinfo raised
    when the stdlib's idna codec was unreadable after the privilege drop) used
    to kill the sender thread with a traceback: now each batch is counted
    failed, one line is logged, redacted, and the sender lives on."""
    exp = http(pki, TlsHttpReceiver(pki, TOKEN))

    def broken(spans):
        raise LookupError(f"unknown encoding: idna ({TOKEN})")

    exp.export = broken
    pipe = ExportPipeline(exp, name="x", batch_size=5, interval_s=0.05)
    with caplog.at_level(logging.WARNING, logger="tracer.export"):
        pipe.start()
        for _ in range(12):
            pipe.submit(make_span())
        pipe.close(timeout=5)
    c = pipe.counters()
    assert (c["spans_export_failed"], c["export_batches_failed"], c["export_batches_refused"],
            c["spans_export_dropped"]) == (12, 3, 0, 0)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("x: 5 spans not exported: LookupError: unknown encoding: idna")
    assert "Traceback" not in capsys.readouterr().err
    no_secret(caplog.text + line)
