"""Echo gRPC client for the e2e tests: `client.py STUB_DIR PORT`.

Reads commands from stdin, one per line, all on ONE channel, and answers each
with a line on stdout ("ok <codes>"):
  unary N K   N unary Say calls, K in flight at a time (futures); codes in order
  count N     one server-streaming Count call of N messages
  chat N      one bidi Chat call of N messages (each answered)
  quit
"""

import sys
import time

import grpc

sys.path.insert(0, sys.argv[1])
import echo_pb2  # noqa: E402
import echo_pb2_grpc  # noqa: E402

channel = grpc.insecure_channel(f"127.0.0.1:{sys.argv[2]}")
stub = echo_pb2_grpc.EchoStub(channel)
grpc.channel_ready_future(channel).result(timeout=10)
print("ready", flush=True)


def code(fut) -> int:
    try:
        fut.result()
        return 0
    except grpc.RpcError as e:
        return e.code().value[0]


def chat_messages(n):
    for i in range(n):
        yield echo_pb2.Msg(n=i, text=f"m{i}")
        time.sleep(0.01)


base = 0
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "unary":
        n, k = int(args[0]), int(args[1])
        codes = []
        for start in range(0, n, k):
            futs = [stub.Say.future(echo_pb2.Msg(n=base + i, text=f"t{base + i}"),
                                    metadata=(("x-request-id", f"req-{base + i}"),))
                    for i in range(start, min(n, start + k))]
            codes += [code(f) for f in futs]
        base += n
        print("ok", *codes, flush=True)
    elif cmd == "count":
        got = list(stub.Count(echo_pb2.Msg(n=int(args[0]))))
        print("ok", len(got), flush=True)
    elif cmd == "chat":
        got = list(stub.Chat(chat_messages(int(args[0]))))
        print("ok", len(got), flush=True)
    elif cmd == "quit":
        break
channel.close()
