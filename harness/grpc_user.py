"""Locust user for the grpc scenario: every call is reported through
``environment.events.request`` like an HTTP request (Locust's gRPC example)."""

from __future__ import annotations

import time

# Runs only inside the load process, after locust has patched the stdlib.


def make_grpc_user(target: str, per_user_rate: float, rng, next_request):
    import grpc
    import grpc.experimental.gevent as grpc_gevent
    from locust import User, constant_throughput, task

    from workloads.grpc_service.stubs import ensure_stubs

    grpc_gevent.init_gevent()
    pb2, pb2_grpc = ensure_stubs()
    target = target.removeprefix("grpc://").removeprefix("http://")

    class GrpcUser(User):
        wait_time = constant_throughput(per_user_rate)

        def on_start(self) -> None:
            self.channel = grpc.insecure_channel(target)
            self.stub = pb2_grpc.CatalogStub(self.channel)

        def on_stop(self) -> None:
            self.channel.close()

        @task
        def one(self) -> None:
            rid, trace_id, span_id = next_request()
            md = [("x-request-id", rid), ("traceparent", f"00-{trace_id}-{span_id}-01")]
            stream = rng.random() < 0.2
            path = "/bench.Catalog/ListItems" if stream else "/bench.Catalog/GetItem"
            ctx = {"rid": rid, "trace_id": trace_id, "span_id": span_id,
                   "method": "POST", "path": path, "status": 200}
            start_wall = time.time()
            t0 = time.perf_counter()
            exc = None
            length = 0
            try:
                if stream:
                    for item in self.stub.ListItems(pb2.ListRequest(count=10), metadata=md,
                                                    timeout=5):
                        length += item.ByteSize()
                else:
                    resp = self.stub.GetItem(pb2.ItemRequest(id=rng.randint(1, 110)),
                                             metadata=md, timeout=5)
                    length = resp.ByteSize()
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:  # NOT_FOUND is an expected answer
                    exc = e
            self.environment.events.request.fire(
                request_type="grpc", name=path, response_time=(time.perf_counter() - t0) * 1000,
                response_length=length, exception=exc, context=ctx, start_time=start_wall)

    return GrpcUser
