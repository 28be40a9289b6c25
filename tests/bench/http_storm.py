"""HTTP/1.1 keep-alive storm for pipeline benchmarks: a minimal server thread
and a client loop in one process, N exchanges on one connection (4 syscall
events and 2 spans per exchange).

    python http_storm.py N   -> prints "done <seconds>"
"""

import socket
import sys
import threading
import time

REQ = b"GET /storm/item HTTP/1.1\r\nHost: bench\r\nUser-Agent: storm\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def main() -> None:
    n = int(sys.argv[1])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        recv, send = conn.recv, conn.send
        while recv(4096):
            send(RESP)

    sys.stdin.readline()  # go
    # connect (and so accept and the server's first recv) only now: a recv
    # already blocked when the tracer attached has no sys_enter to be seen
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = socket.create_connection(srv.getsockname())
    send, recv = c.send, c.recv
    t0 = time.perf_counter()
    for _ in range(n):
        send(REQ)
        recv(4096)
    elapsed = time.perf_counter() - t0
    c.close()
    print(f"done {elapsed:.6f}", flush=True)


if __name__ == "__main__":
    main()
