"""Syscall storm for loader benchmarks: N small writes on one loopback TCP
connection (one data event each), the other end drained in big reads.

    python storm.py N SIZE   -> prints "done <seconds>"
"""

import os
import socket
import sys
import threading
import time


def main() -> None:
    n, size = int(sys.argv[1]), int(sys.argv[2])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def drain():
        conn, _ = srv.accept()
        while conn.recv(1 << 20):
            pass

    t = threading.Thread(target=drain)
    t.start()
    c = socket.create_connection(srv.getsockname())
    sys.stdin.readline()  # go
    fd, buf, write = c.fileno(), b"s" * size, os.write
    t0 = time.perf_counter()
    for _ in range(n):
        write(fd, buf)
    elapsed = time.perf_counter() - t0
    c.close()
    t.join()
    print(f"done {elapsed:.6f}", flush=True)


if __name__ == "__main__":
    main()
