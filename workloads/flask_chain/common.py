"""Ground-truth hooks shared by the Flask services."""

from __future__ import annotations

import os

from flask import Flask, g, request

from workloads.groundtruth import GroundTruthLog, now_ns


def install_ground_truth(app: Flask, service: str) -> GroundTruthLog:
    """Log one server record per request handled, timed from the first hook to
    the response object (what the application itself can observe)."""
    log = GroundTruthLog(os.environ["GT_PATH"], service)

    @app.before_request
    def _start() -> None:
        g.gt_start = now_ns()

    @app.after_request
    def _finish(resp):
        log.record(
            kind="server", request_id=request.headers.get("x-request-id"),
            method=request.method, path=request.path, status=resp.status_code,
            start_ns=g.get("gt_start", now_ns()), end_ns=now_ns(),
            traceparent_in=request.headers.get("traceparent"),
            peer=request.remote_addr,
        )
        return resp

    return log
