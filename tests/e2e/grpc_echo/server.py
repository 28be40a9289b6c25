"""Echo gRPC server for the e2e tests: `server.py STUB_DIR PORT SLEEP_MS`.

Say sleeps SLEEP_MS, then answers; n % 5 == 2 -> NOT_FOUND, n % 5 == 4 ->
INVALID_ARGUMENT. Count streams n messages, 10 ms apart. Chat echoes each
message. Prints "ready" once serving.
"""

import sys
import time
from concurrent import futures

import grpc

sys.path.insert(0, sys.argv[1])
import echo_pb2  # noqa: E402
import echo_pb2_grpc  # noqa: E402

SLEEP = int(sys.argv[3]) / 1000


class Echo(echo_pb2_grpc.EchoServicer):
    def Say(self, request, context):  # noqa: N802 (generated name)
        time.sleep(SLEEP)
        if request.n % 5 == 2:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no item {request.n}")
        if request.n % 5 == 4:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad n")
        return echo_pb2.Msg(n=request.n, text="said-" + request.text)

    def Count(self, request, context):  # noqa: N802
        for i in range(request.n):
            time.sleep(0.01)
            yield echo_pb2.Msg(n=i, text="c" * i)

    def Chat(self, request_iterator, context):  # noqa: N802
        for m in request_iterator:
            yield echo_pb2.Msg(n=m.n, text="re:" + m.text)


server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
server.add_insecure_port(f"127.0.0.1:{sys.argv[2]}")
server.start()
print("ready", flush=True)
server.wait_for_termination()
