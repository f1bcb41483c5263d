"""A TCP forwarder that delays every chunk from the server: makes a real directory slow."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class SlowProxy:
    """Listens on 127.0.0.1:<port> and forwards to ``target``, delaying replies by ``delay``.

    ``port`` 0 (default) picks a free one; a given one lets a closed forwarder come back on the
    same address (a server that went away and returned).
    """

    def __init__(self, target_host: str, target_port: int, delay: float, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, self.delay), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if delay:
                    time.sleep(delay)  # slow on purpose: the delay is what this proxy is for
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
