# cython: annotation_typing=False
"""gRPC over HTTP/2: message framing in DATA frames and span attributes.

A gRPC message on the wire is a 5-byte prefix (compressed flag, big-endian
uint32 length) and the message; messages run across DATA frames freely. The
counter walks the prefixes; the bytes between them are skipped by count, so
only prefixes need to be captured. A prefix lost in a capture gap ends the
count for that direction (`lost`): counts are reported only when exact.
"""

from __future__ import annotations


class MessageCounter:
    """Messages and their total length in one direction of one stream."""

    __slots__ = ("need", "prefix", "count", "total", "lost")

    def __init__(self) -> None:
        self.need = 0  # bytes of the current message still to come
        self.prefix = b""  # a prefix split across DATA frames or syscalls
        self.count = 0
        self.total = 0  # sum of message lengths (as framed, compressed or not)
        self.lost = False

    def feed(self, data: bytes, pos: int, n: int, cap: int) -> None:
        """n content bytes of DATA at pos; bytes at or past cap were not captured."""
        while n > 0:
            need = self.need
            if need:
                if n < need:
                    self.need = need - n
                    return
                pos += need
                n -= need
                self.need = 0
                continue
            have = len(self.prefix)
            take = 5 - have
            if take > n:
                take = n
            if pos + take > cap:
                self.lost = True  # a prefix in the gap: message boundaries unknown
                self.need = 0
                return
            if have:
                pre = self.prefix + data[pos:pos + take]
            else:
                pre = data[pos:pos + take]
            pos += take
            n -= take
            if len(pre) < 5:
                self.prefix = pre
                return
            self.prefix = b""
            length = pre[1]  # shifted in its own (64-bit) type
            length = length << 24 | pre[2] << 16 | pre[3] << 8 | pre[4]
            self.count += 1
            self.total += length
            self.need = length


def split_path(path: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method'); ('', '') if not that shape."""
    if path[:1] != "/":
        return "", ""
    i = path.find("/", 1)
    # no second slash, an empty service or method, or a third slash
    if i <= 1 or i == len(path) - 1 or path.find("/", i + 1) >= 0:
        return "", ""
    return path[1:i], path[i + 1:]


def attributes(path: str, grpc_status: str | None, grpc_message: str | None,
               req: MessageCounter | None, resp: MessageCounter | None) -> dict:
    """OTel RPC attributes (rpc.*) for one call."""
    a: dict = {"rpc.system": "grpc"}
    service, method = split_path(path)
    if service:
        a["rpc.service"] = service
        a["rpc.method"] = method
    if grpc_status is not None and grpc_status.isascii() and grpc_status.isdigit():
        a["rpc.grpc.status_code"] = int(grpc_status)
    if grpc_message:
        a["rpc.grpc.status_message"] = grpc_message
    if req is not None and not req.lost:
        a["rpc.grpc.request.messages"] = req.count
        a["rpc.grpc.request.bytes"] = req.total
    if resp is not None and not resp.lost:
        a["rpc.grpc.response.messages"] = resp.count
        a["rpc.grpc.response.bytes"] = resp.total
    return a
