"""grpcio Catalog server that logs ground truth for every RPC it handles.

gRPC rides on HTTP/2: the method is always POST, the path is
``/bench.Catalog/<Method>``, the HTTP status 200, and the outcome is the
grpc-status trailer (recorded as ``grpc_status``).
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures

import grpc

from workloads.groundtruth import GroundTruthLog, now_ns
from workloads.grpc_service.stubs import ensure_stubs

N_ITEMS = 100


def build_servicer(pb2, pb2_grpc, log: GroundTruthLog):
    def meta(context) -> dict[str, str]:
        return {k.lower(): v for k, v in context.invocation_metadata()}

    def record(context, path: str, start: int, code: grpc.StatusCode) -> None:
        md = meta(context)
        log.record(kind="server", protocol="grpc", request_id=md.get("x-request-id"),
                   method="POST", path=path, status=200, start_ns=start, end_ns=now_ns(),
                   traceparent_in=md.get("traceparent"), peer=context.peer(),
                   grpc_status=code.value[0])

    class Catalog(pb2_grpc.CatalogServicer):
        def GetItem(self, request, context):  # noqa: N802 (generated name)
            start = now_ns()
            if not 1 <= request.id <= N_ITEMS:
                record(context, "/bench.Catalog/GetItem", start, grpc.StatusCode.NOT_FOUND)
                context.abort(grpc.StatusCode.NOT_FOUND, "no such item")
            record(context, "/bench.Catalog/GetItem", start, grpc.StatusCode.OK)
            return pb2.Item(id=request.id, name=f"item-{request.id}", price=1.0 + request.id / 10)

        def ListItems(self, request, context):  # noqa: N802
            start = now_ns()
            for i in range(1, max(0, min(request.count, N_ITEMS)) + 1):
                yield pb2.Item(id=i, name=f"item-{i}", price=1.0 + i / 10)
            record(context, "/bench.Catalog/ListItems", start, grpc.StatusCode.OK)

    return Catalog()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bind", default="0.0.0.0:50051")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--service", default="frontend", help="name written in ground truth")
    ap.add_argument("--ground-truth", required=True)
    args = ap.parse_args()
    pb2, pb2_grpc = ensure_stubs()
    log = GroundTruthLog(args.ground_truth, args.service)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads))
    pb2_grpc.add_CatalogServicer_to_server(build_servicer(pb2, pb2_grpc, log), server)
    server.add_insecure_port(args.bind)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    log.close()


if __name__ == "__main__":
    main()
