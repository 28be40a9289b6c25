"""Flask frontend whose downstream is the gRPC Catalog service.

Like the http-chain frontend it forwards ``x-request-id`` (as gRPC metadata)
and not ``traceparent``.
"""

from __future__ import annotations

import os

import grpc
from flask import Flask, Response, jsonify, request

from workloads.flask_chain.common import install_ground_truth
from workloads.groundtruth import now_ns
from workloads.grpc_service.stubs import ensure_stubs


def create_app() -> Flask:
    app = Flask("frontend")
    log = install_ground_truth(app, "frontend")
    target = os.environ.get("BACKEND_GRPC", "198.18.2.2:50051")
    pb2, pb2_grpc = ensure_stubs()
    # One channel per worker process; grpcio multiplexes threads over it.
    stub = pb2_grpc.CatalogStub(grpc.insecure_channel(target))

    def call_get_item(item_id: int):
        rid = request.headers.get("x-request-id")
        md = [("x-request-id", rid)] if rid else []
        start = now_ns()
        code = grpc.StatusCode.OK
        try:
            return stub.GetItem(pb2.ItemRequest(id=item_id), metadata=md, timeout=5)
        except grpc.RpcError as e:
            code = e.code()
            return None
        finally:
            log.record(kind="client", protocol="grpc", request_id=rid, method="POST",
                       path="/bench.Catalog/GetItem", status=200, start_ns=start,
                       end_ns=now_ns(), peer=target, grpc_status=code.value[0])

    @app.get("/api/items/<int:item_id>")
    def get_item(item_id: int):
        item = call_get_item(item_id)
        if item is None:
            return jsonify(error="not found"), 404
        return jsonify(id=item.id, name=item.name, price=item.price)

    @app.post("/api/orders")
    def create_order():
        # The gRPC backend has no order method: look the item up instead, so
        # every frontend request still makes exactly one downstream call.
        body = request.get_json(silent=True) or {}
        item = call_get_item(int(body.get("item_id", 1)))
        return (jsonify(ok=True), 201) if item is not None else (jsonify(error="no item"), 404)

    @app.get("/healthz")
    def healthz():
        return Response("ok")

    return app
