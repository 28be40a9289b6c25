"""OTLP mapping (decoded with the official protos) and both transports against
real in-process receivers, including the retry classification."""

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from harness.receivers import GrpcReceiver, HttpReceiver, attrs
from tests.e2e.tracing import free_port
from tests.unit.export_spans import make_span
from tracer.export import otlp, semconv
from tracer.export.pipeline import ExportError, RetryableError

RES = semconv.Resources(host="testhost")


def test_span_mapping_field_by_field():
    s = make_span(method="POST", path="/item/77", query="a=1", status=503,
                  parent_span_id="00f067aa0ba902b7", kind="server")
    req = otlp.Encoder(RES).request([s])
    (rs,) = req.resource_spans
    assert attrs(rs.resource.attributes) == {
        "service.name": "python3", "process.pid": 4242, "process.executable.name": "python3",
        "host.name": "testhost"}
    (ss,) = rs.scope_spans
    assert ss.scope.name == "httptrace-ebpf"
    (o,) = ss.spans
    assert o.trace_id.hex() == s.trace_id and o.span_id.hex() == s.span_id
    assert o.parent_span_id.hex() == "00f067aa0ba902b7"
    assert o.name == "POST /item/{id}"
    assert o.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert o.start_time_unix_nano == s.start_time_unix_nano
    assert o.end_time_unix_nano - o.start_time_unix_nano == 25_000_000
    assert o.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    a = attrs(o.attributes)
    assert a == {
        "http.request.method": "POST", "url.path": "/item/77", "url.query": "a=1",
        "http.response.status_code": 503, "server.address": "127.0.0.1", "server.port": 8080,
        "client.address": "127.0.0.1", "user_agent.original": "curl/8",
        "network.protocol.version": "1.1", "network.peer.address": "127.0.0.1",
        "network.peer.port": 50000, "network.transport": "tcp", "thread.id": 4243,
        "error.type": "503"}


def test_client_span_no_parent_ok_status_and_grouping_per_process():
    spans = [make_span(kind="client", pid=1, comm="curl"), make_span(pid=2, comm="node"),
             make_span(kind="client", pid=1, comm="curl")]
    req = otlp.Encoder(RES).request(spans)
    assert [attrs(rs.resource.attributes)["process.pid"] for rs in req.resource_spans] == [1, 2]
    first = req.resource_spans[0].scope_spans[0].spans
    assert len(first) == 2
    assert first[0].kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert first[0].parent_span_id == b""
    assert first[0].status.code == trace_pb2.Status.STATUS_CODE_UNSET


def test_grpc_span_mapping():
    s = make_span(protocol="grpc", method="POST", path="/shop.Cart/Add", kind="client",
                  attributes_extra={"rpc.system": "grpc", "rpc.service": "shop.Cart",
                                    "rpc.method": "Add", "rpc.grpc.status_code": 14})
    (o,) = otlp.Encoder(RES).request([s]).resource_spans[0].scope_spans[0].spans
    assert o.name == "shop.Cart/Add"
    a = attrs(o.attributes)
    assert a["rpc.system"] == "grpc" and a["rpc.grpc.status_code"] == 14
    assert a["error.type"] == "14"
    assert o.status.code == trace_pb2.Status.STATUS_CODE_ERROR


def test_service_name_mapping():
    req = otlp.Encoder(semconv.Resources({"python3": "checkout"}, host="h")).request(
        [make_span()])
    assert attrs(req.resource_spans[0].resource.attributes)["service.name"] == "checkout"


def test_grpc_exporter_delivers():
    spans = [make_span() for _ in range(23)]
    with GrpcReceiver() as rx:
        exp = otlp.GrpcExporter("127.0.0.1", rx.port, otlp.Encoder(RES))
        assert exp.export(spans) == 0
        got = rx.wait_spans(23)
        exp.close()
    assert [s.span_id.hex() for _, s in got] == [s.span_id for s in spans]


def test_grpc_exporter_unavailable_is_retryable():
    exp = otlp.GrpcExporter("127.0.0.1", free_port(), timeout_s=2)
    with pytest.raises(RetryableError, match="UNAVAILABLE"):
        exp.export([make_span()])
    exp.close()


def test_http_exporter_delivers_and_classifies_errors():
    spans = [make_span() for _ in range(23)]
    with HttpReceiver() as rx:
        exp = otlp.HttpExporter("127.0.0.1", rx.port, "/v1/traces", otlp.Encoder(RES))
        assert exp.export(spans) == 0
        assert [s.span_id.hex() for _, s in rx.wait_spans(23)] == [s.span_id for s in spans]
        rx.status = 503
        with pytest.raises(RetryableError, match="HTTP 503"):
            exp.export(spans[:1])
        rx.status = 429
        with pytest.raises(RetryableError):
            exp.export(spans[:1])
        rx.status = 400
        with pytest.raises(ExportError) as e:
            exp.export(spans[:1])
        assert not isinstance(e.value, RetryableError)
        rx.status = 200
        assert exp.export(spans[:2]) == 0  # the keep-alive connection still works
        assert len(rx.spans()) == 25
        exp.close()


def test_http_exporter_connection_refused_is_retryable():
    exp = otlp.HttpExporter("127.0.0.1", free_port())
    with pytest.raises(RetryableError):
        exp.export([make_span()])
