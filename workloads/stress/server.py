"""Minimal keep-alive HTTP/1.1 server on asyncio: every request gets a tiny 200.

Flask would saturate the 2-core machine long before the tracer; this server
answers in a few microseconds of Python so the event rate at the tracer is
limited by the tracer (or the load generator), not by the workload.
Ground truth is buffered and flushed on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from workloads.groundtruth import GroundTruthLog, now_ns

BODY = b"ok\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class HttpProtocol(asyncio.Protocol):
    def __init__(self, log: GroundTruthLog) -> None:
        self.log = log
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.peer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else None

    def data_received(self, data: bytes) -> None:
        start = now_ns()
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, _ = lines[0].split(" ", 2)
            except ValueError:
                self.transport.close()
                return
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            body_len = int(headers.get("content-length", "0") or 0)
            if len(self.buf) < end + 4 + body_len:
                return
            self.buf = self.buf[end + 4 + body_len:]
            path = target.split("?", 1)[0]
            ok = path == "/ping"
            self.transport.write(RESPONSE if ok else NOT_FOUND)
            self.log.record(kind="server", request_id=headers.get("x-request-id"),
                            method=method, path=path, status=200 if ok else 404,
                            start_ns=start, end_ns=now_ns(),
                            traceparent_in=headers.get("traceparent"), peer=self.peer)


async def serve(host: str, port: int, gt_path: str) -> None:
    log = GroundTruthLog(gt_path, "frontend", buffered=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(lambda: HttpProtocol(log), host, port, backlog=1024)

    def periodic_flush() -> None:
        # The harness reads ground truth per run while the server keeps running.
        log.flush()
        loop.call_later(0.2, periodic_flush)

    periodic_flush()
    try:
        await stop
    finally:
        server.close()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--ground-truth", required=True)
    args = ap.parse_args()
    asyncio.run(serve(args.host, args.port, args.ground_truth))


if __name__ == "__main__":
    main()
