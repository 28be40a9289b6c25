"""Frontend: receives Locust's requests and calls the backend for each one.

The frontend forwards ``x-request-id`` (as many real services do) but not
``traceparent``: it stands for an uninstrumented application, so any trace
context the backend receives was put there by the tracer.
"""

from __future__ import annotations

import os
import threading

import requests
from flask import Flask, Response, jsonify, request

from workloads.flask_chain.common import install_ground_truth
from workloads.groundtruth import now_ns


def create_app() -> Flask:
    app = Flask("frontend")
    log = install_ground_truth(app, "frontend")
    backend = os.environ.get("BACKEND_URL", "http://198.18.2.2:8081").rstrip("/")
    local = threading.local()

    def session() -> requests.Session:
        # One keep-alive connection per worker thread.
        if not hasattr(local, "s"):
            local.s = requests.Session()
        return local.s

    def downstream(method: str, path: str, **kw) -> requests.Response:
        rid = request.headers.get("x-request-id")
        headers = {"x-request-id": rid} if rid else {}
        start = now_ns()
        status = None
        try:
            resp = session().request(method, backend + path, headers=headers, timeout=5, **kw)
            status = resp.status_code
            return resp
        finally:
            log.record(kind="client", request_id=rid, method=method, path=path,
                       status=status, start_ns=start, end_ns=now_ns(),
                       traceparent_out=None, peer=backend)

    @app.get("/api/items/<int:item_id>")
    def get_item(item_id: int) -> Response:
        resp = downstream("GET", f"/items/{item_id}")
        return Response(resp.content, status=resp.status_code, mimetype="application/json")

    @app.post("/api/orders")
    def create_order() -> Response:
        resp = downstream("POST", "/orders", json=request.get_json(silent=True) or {})
        return Response(resp.content, status=resp.status_code, mimetype="application/json")

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    return app
