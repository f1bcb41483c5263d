"""Raw HTTP on a socket for hub stand-ins that answer with exact bytes (channel tests)."""

from __future__ import annotations

import socket
import threading


def read_request(conn: socket.socket, data: bytes) -> tuple[bytes, bytes]:
    """One request (head and Content-Length body) from ``data`` and ``conn``, and the rest
    (``b""`` for both when the peer closes before a whole head)."""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


class RawHub:
    """A listener on 127.0.0.1 handing each connection to :meth:`_handle` in turn (one
    thread), counting connections and keeping the requests its subclasses read."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()
