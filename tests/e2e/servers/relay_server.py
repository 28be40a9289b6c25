"""Two traced tiers for e2e tests, one process each:

    relay_server.py NAME PORT [BACKEND_PORT] [SLEEP_MS]

The process names itself NAME (its comm, so the tracer's service name). With
BACKEND_PORT it forwards GET /api/<rest> to 127.0.0.1:BACKEND_PORT/<rest> on
a new connection, from the thread handling the request, and answers with the
backend's status; without, it answers /ok/* 200 and /fail/* 500 after
sleeping SLEEP_MS.
"""

import ctypes
import http.client
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PR_SET_NAME = 15
NAME, PORT = sys.argv[1], int(sys.argv[2])
BACKEND = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
SLEEP_MS = int(sys.argv[4]) if len(sys.argv) > 4 else 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if BACKEND is None:
            time.sleep(SLEEP_MS / 1000)
            status = 500 if self.path.startswith("/fail/") else 200
        else:
            conn = http.client.HTTPConnection("127.0.0.1", BACKEND, timeout=10)
            try:
                conn.request("GET", self.path.removeprefix("/api"),
                             headers={"connection": "close"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            finally:
                conn.close()
        body = b"%s %d\n" % (NAME.encode(), status)
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    # threads made after this inherit the name
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, NAME.encode()[:15], 0, 0, 0)
    srv = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()
