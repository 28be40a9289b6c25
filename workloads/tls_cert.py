"""Make a self-signed certificate if missing, then exec a server.

    python -m workloads.tls_cert CERT KEY IP[,IP...] -- CMD [ARG...]

Scenarios stay pure descriptions (harness/scenarios.py builds them without
side effects); the first server to start makes the certificate for all of
them. Written to a temporary name and renamed, so a concurrent start never
reads half a file.
"""

from __future__ import annotations

import os
import subprocess
import sys


def ensure_cert(cert: str, key: str, ips: list[str]) -> None:
    if os.path.exists(cert) and os.path.exists(key):
        return
    tmp_cert, tmp_key = f"{cert}.{os.getpid()}.tmp", f"{key}.{os.getpid()}.tmp"
    san = ",".join(f"IP:{ip}" for ip in ips)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", tmp_key, "-out", tmp_cert, "-subj", "/CN=workload",
                    "-addext", f"subjectAltName={san}"], check=True, capture_output=True)
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)


def main(argv: list[str]) -> None:
    if len(argv) < 5 or argv[3] != "--":
        sys.exit("usage: python -m workloads.tls_cert CERT KEY IP[,IP...] -- CMD [ARG...]")
    ensure_cert(argv[0], argv[1], argv[2].split(","))
    os.execvp(argv[4], argv[4:])


if __name__ == "__main__":
    main(sys.argv[1:])
