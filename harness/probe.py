"""Wait until TCP endpoints accept connections; run inside a namespace:

    ip netns exec NS python -m harness.probe 198.18.1.2:8080 --timeout 20
"""

from __future__ import annotations

import argparse
import socket
import sys
import time


def wait_tcp(endpoints: list[str], timeout: float) -> list[str]:
    """Endpoints still refusing connections when ``timeout`` ran out."""
    pending = list(endpoints)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for ep in list(pending):
            host, _, port = ep.rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=0.5):
                    pending.remove(ep)
            except OSError:
                pass
        if pending:
            time.sleep(0.05)
    return pending


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.probe")
    ap.add_argument("endpoints", nargs="+", metavar="HOST:PORT")
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args(argv)
    left = wait_tcp(args.endpoints, args.timeout)
    if left:
        print(f"probe: not listening after {args.timeout:g}s: {' '.join(left)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
