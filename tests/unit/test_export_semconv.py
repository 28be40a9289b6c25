"""Route templating, span status and names, resources (service naming, container id)."""

import os

import pytest

from tests.unit.export_spans import make_span
from tracer.export import semconv


@pytest.mark.parametrize("path,expected", [
    ("/item/123", "/item/{id}"),
    ("/", "/"),
    ("", "/"),
    ("/users/42/orders/7", "/users/{id}/orders/{id}"),
    ("/v1/api2/static", "/v1/api2/static"),
    ("/u/550e8400-e29b-41d4-a716-446655440000", "/u/{id}"),
    ("/blob/9f1c2a7be0d44c1a", "/blob/{id}"),
    ("/tok/aZ3kQ9xPq2LmN8vR", "/tok/{id}"),
    ("/files/123.json", "/files/{id}.json"),
    ("/deadbeef/cafe", "/deadbeef/cafe"),  # hex-looking words without digits stay
    ("/a//b/", "/a//b/"),
    ("*", "*"),
])
def test_route_templating(path, expected):
    assert semconv.route(path) == expected


def test_route_cache_is_bounded():
    c = semconv.RouteCache(size=4)
    for i in range(10):
        assert c(f"/x/{i}") == "/x/{id}"
    assert len(c._cache) <= 4


@pytest.mark.parametrize("kind,status,error", [
    ("server", 200, False), ("server", 404, False), ("server", 500, True),
    ("server", 503, True), ("client", 404, True), ("client", 302, False),
    ("client", 500, True),
])
def test_http_error_status(kind, status, error):
    s = make_span(kind=kind, status=status)
    assert semconv.is_error(s, s.attributes()) is error
    if error:
        assert semconv.error_type(s, s.attributes()) == str(status)


@pytest.mark.parametrize("kind,code,error", [
    ("server", 0, False), ("server", 5, False), ("server", 2, True), ("server", 14, True),
    ("client", 0, False), ("client", 5, True), ("client", 14, True),
])
def test_grpc_error_status(kind, code, error):
    s = make_span(kind=kind, protocol="grpc", method="POST", path="/shop.Cart/Add", status=200,
                  attributes_extra={"rpc.system": "grpc", "rpc.grpc.status_code": code})
    assert semconv.is_error(s, s.attributes()) is error
    assert semconv.span_name(s) == "shop.Cart/Add"


def test_span_name_http():
    assert semconv.span_name(make_span(method="POST", path="/item/9")) == "POST /item/{id}"
    assert semconv.span_name(make_span(method="BREW", path="/pot")) == "_OTHER /pot"


def test_resources_default_comm_and_mapping():
    me = os.getpid()
    r = semconv.Resources(host="h1")
    res = r.of(me, "python3")
    assert res["service.name"] == "python3"
    assert res["process.pid"] == me
    assert res["host.name"] == "h1"
    exe = os.path.basename(os.readlink("/proc/self/exe"))
    mapped = semconv.Resources({exe: "by-exe", "node": "gateway"}, host="h1")
    assert mapped.service(me, "some-comm") == "by-exe"
    assert mapped.service(me, "node") == "gateway"
    assert semconv.Resources({"x": "y"}).service(2 ** 22 + 7, "gone") == "gone"


def test_container_id_from_cgroup(tmp_path, monkeypatch):
    cid = "a" * 12 + "0123456789abcdef" * 3 + "beef"
    assert len(cid) == 64
    cases = {
        f"0::/system.slice/docker-{cid}.scope": cid,
        f"0::/kubepods/besteffort/pod1/cri-containerd-{cid}.scope": cid,
        f"12:memory:/docker/{cid}": cid,
        "0::/user.slice/user-1000.slice/session-2.scope": "",
    }
    real_open = open
    for content, expected in cases.items():
        def fake_open(path, *a, _c=content, **k):
            if str(path).endswith("/cgroup"):
                p = tmp_path / "cgroup"
                p.write_text(_c + "\n")
                return real_open(p, *a, **k)
            return real_open(path, *a, **k)
        monkeypatch.setattr("builtins.open", fake_open)
        assert semconv.container_id(1) == expected
        monkeypatch.undo()


def test_parse_service_names():
    assert semconv.parse_service_names(["python3=shop", "node=gw"]) == \
        {"python3": "shop", "node": "gw"}
    with pytest.raises(ValueError, match="COMM=NAME"):
        semconv.parse_service_names(["python3"])
