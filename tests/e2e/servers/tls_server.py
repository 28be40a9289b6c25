"""py_server.py's routes over HTTPS: `tls_server.py PORT SLEEP_MS CERT KEY`.

Python's ssl module links the system libssl.so.3 (SSL_read_ex/SSL_write_ex
over a socket BIO).
"""

import ssl
import sys
from http.server import ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from py_server import Handler  # noqa: E402 (reads SLEEP_MS from argv[2])

if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("ready", flush=True)
    srv.serve_forever()
