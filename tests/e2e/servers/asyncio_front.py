"""A stdlib asyncio front for e2e tests (issue #21): asyncio.start_server,
HTTP/1.1 keep-alive, and for each request GET /front/<i> one call to the
backend (GET /ok/<i>) with asyncio.open_connection, forwarding no header.

    asyncio_front.py PORT BACKEND_PORT keepalive|new GROUNDTRUTH [DELAY_MS]

keepalive: backend connections are pooled and reused (one request at a time
each); new: a connection per call (Connection: close). DELAY_MS: an
asyncio.sleep between the request and the call (a timer in between).
Ground truth: one JSON line per call, {"request_id": i, "call_path": ...},
written by the task that served the request.
"""

import asyncio
import json
import sys

PORT, BPORT = int(sys.argv[1]), int(sys.argv[2])
MODE, TRUTH = sys.argv[3], sys.argv[4]
DELAY_MS = int(sys.argv[5]) if len(sys.argv) > 5 else 0
pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]] | None:
    line = await reader.readline()
    if not line:
        return None
    headers = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return line.decode("latin-1"), headers


async def call_backend(path: str) -> int:
    if MODE == "keepalive" and pool:
        reader, writer = pool.pop()
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", BPORT)
    close = "close" if MODE == "new" else "keep-alive"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: backend\r\nConnection: {close}\r\n\r\n"
                 .encode())
    head = await read_head(reader)
    status = int(head[0].split()[1])
    await reader.readexactly(int(head[1].get("content-length", 0)))
    if MODE == "keepalive":
        pool.append((reader, writer))
    else:
        writer.close()
    return status


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await read_head(reader)
        if head is None:
            break
        i = head[0].split()[1].rsplit("/", 1)[-1]
        if DELAY_MS:
            await asyncio.sleep(DELAY_MS / 1000)
        call = f"/ok/{i}"
        status = await call_backend(call)
        with open(TRUTH, "a") as f:
            f.write(json.dumps({"request_id": i, "call_path": call, "status": status}) + "\n")
        body = b"front %s\n" % i.encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", PORT)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
