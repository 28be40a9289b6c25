"""Synthetic HTTP/2 byte streams: a real h2 client/server pair in memory.

Each data_to_send() flush of one side is one syscall (a write on that side, a
read of the same bytes on the other), recorded in order as (direction, bytes)
with direction "c2s" or "s2c". The recording is then replayed as DataEvents
for either end of the connection with synth.Conversation.

    p = H2Pair()
    sid = p.request("POST", "/pkg.Svc/M", body=grpc_frame(b"hi"), grpc=True)
    p.respond(sid, 200, body=grpc_frame(b"ok"), trailers={"grpc-status": "0"})
    events = p.replay(ROLE_SERVER)
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings

from tests.unit.synth import Clock, Conversation


def grpc_frame(msg: bytes, compressed: bool = False) -> bytes:
    """One gRPC length-prefixed message."""
    return bytes([1 if compressed else 0]) + len(msg).to_bytes(4, "big") + msg


class H2Pair:
    def __init__(self, *, server_first: bool = False, max_frame: int = 16384) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.chunks: list[tuple[str, bytes]] = []
        self.received: dict[int, list] = {}
        for conn in (self.client, self.server):
            conn.local_settings = h2.settings.Settings(
                client=conn.config.client_side,
                initial_values={h2.settings.SettingCodes.MAX_FRAME_SIZE: max_frame,
                                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 30})
        if server_first:
            self.client.initiate_connection()  # queued, not sent yet
            self.server.initiate_connection()
            self.flush_server()
            self.flush_client()
        else:
            self.client.initiate_connection()
            self.flush_client()
            self.server.initiate_connection()
            self.flush_server()
        self.settle()
        for conn in (self.client, self.server):
            conn.increment_flow_control_window(1 << 30)
        self.settle()

    # ---- moving bytes ----

    def _move(self, src, dst, direction: str) -> bool:
        data = src.data_to_send()
        if not data:
            return False
        self.chunks.append((direction, data))
        for ev in dst.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                dst.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            sid = getattr(ev, "stream_id", None)
            if sid is not None:
                self.received.setdefault(sid, []).append(ev)
        return True

    def flush_client(self) -> bool:
        return self._move(self.client, self.server, "c2s")

    def flush_server(self) -> bool:
        return self._move(self.server, self.client, "s2c")

    def settle(self) -> None:
        """Flush both sides until quiet (acks, window updates)."""
        while self.flush_client() | self.flush_server():
            pass

    # ---- exchanges ----

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes = b"",
                *, grpc: bool = False, flush: bool = True, end: bool = True) -> int:
        sid = self.client.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":path", path),
                (":authority", "svc.test:50051")]
        if grpc:
            hdrs += [("content-type", "application/grpc"), ("te", "trailers")]
        hdrs += list((headers or {}).items())
        self.client.send_headers(sid, hdrs, end_stream=end and not body)
        if body:
            self.client.send_data(sid, body, end_stream=end)
        if flush:
            self.flush_client()
        return sid

    def respond(self, sid: int, status: int = 200, headers: dict | None = None,
                body: bytes | list[bytes] = b"", trailers: dict | None = None, *,
                flush: bool = True) -> None:
        """body: one DATA write, or a list of DATA frames (one flush each)."""
        hdrs = [(":status", str(status)), *(headers or {}).items()]
        bodies = body if isinstance(body, list) else ([body] if body else [])
        self.server.send_headers(sid, hdrs, end_stream=not bodies and not trailers)
        for i, part in enumerate(bodies):
            last = i == len(bodies) - 1 and not trailers
            self.server.send_data(sid, part, end_stream=last)
            if flush and isinstance(body, list):
                self.flush_server()
        if trailers:
            self.server.send_headers(sid, list(trailers.items()), end_stream=True)
        if flush:
            self.flush_server()

    def data(self, sid: int, body: bytes, end: bool = False, *, client: bool = True) -> None:
        conn = self.client if client else self.server
        conn.send_data(sid, body, end_stream=end)
        (self.flush_client if client else self.flush_server)()

    # ---- replay ----

    def conversation(self, role: int, *, clock: Clock | None = None, capture: int = 4096,
                     skip: int = 0, **kw) -> Conversation:
        """The recorded chunks (from index `skip` on) as seen by one end."""
        c = Conversation(clock or Clock(), role=role, capture_bytes=capture, **kw)
        for direction, data in self.chunks[skip:]:
            c.syscall(c.request_dir if direction == "c2s" else c.response_dir, data)
        return c
