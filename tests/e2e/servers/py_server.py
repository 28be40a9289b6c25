"""A plain http.server for e2e tests: behaviour is chosen by the path.

/ok/<x> 200, /missing/<x> 404, /fail/<x> 500, /big/<n> n-byte body,
/chunked/<n> n chunks; every handler sleeps SLEEP_MS first, so each span's
duration has a known lower bound. POST bodies are read fully and their length
echoed.
"""

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLEEP_MS = int(sys.argv[2]) if len(sys.argv) > 2 else 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The status line and headers, then the body: two writes. With Nagle the
    # second waits for the client's delayed ACK on a keep-alive connection;
    # the syscalls the tracer sees are the same either way.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _handle(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        time.sleep(SLEEP_MS / 1000)
        parts = self.path.split("?")[0].split("/")
        kind = parts[1] if len(parts) > 1 else ""
        if kind == "chunked":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(int(parts[2])):
                data = b"chunk-%d;" % i
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        status = {"ok": 200, "missing": 404, "fail": 500, "big": 200}.get(kind, 404)
        out = b"x" * int(parts[2]) if kind == "big" else b"len=%d\n" % len(body)
        self.send_response(status)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()
