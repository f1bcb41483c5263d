"""A kept-alive HTTP/1.1 client connection for the agent's POSTs to the hub (one per thread).

``http.client`` spends about 180 µs of CPU on a small request over the 15 µs of the socket
calls themselves (a regex per header sent, the ``email`` package parsing the answer's
headers, a buffered reader and response object per answer), and the agent makes one per poll
and one per relayed sign-in. This speaks only what those need: a POST with a body, written in
one call; an answer framed by ``Content-Length``, ``chunked`` or the connection's end, ``1xx``
answers skipped, kept alive by HTTP/1.1's and 1.0's rules. Failures are ``http.client``'s own
exceptions (``RemoteDisconnected``, ``BadStatusLine``, ``LineTooLong``, ``IncompleteRead``),
``OSError`` (``TimeoutError``, ``ssl.SSLError``) or ``ValueError`` for a header or path that
would break the request, so callers handle them as they did.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
from typing import Any

MAX_LINE = 65536  # http.client's bound on a status or header line
MAX_HEADERS = 100  # and on the number of header lines

_BAD_PATH = re.compile("[\x00-\x20\x7f]")  # http.client refuses these in a request target


class Headers:
    """An answer's headers: ``get`` by name in any case (the first of repeated ones)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items
        self._first: dict[str, str] = {}
        for name, value in items:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, default: Any = None) -> Any:
        """The first value of header ``name``, else ``default``."""
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first


def _host_header(host: str, port: int, default_port: int) -> str:
    """The ``Host`` value ``http.client`` sends: IPv6 in brackets, the default port left out."""
    text = host.encode("idna").decode("ascii")
    if ":" in text:
        text = f"[{text}]"
    return text if port == default_port else f"{text}:{port}"


class Connection:
    """One connection to ``host``:``port`` (TLS with ``context``); not for several threads.

    ``sock`` is the open socket (None before :meth:`connect` and after :meth:`close`): another
    thread may shut it down to fail a request in progress.
    """

    def __init__(
        self, host: str, port: int | None, *, timeout: float, context: ssl.SSLContext | None
    ) -> None:
        default_port = 443 if context is not None else 80
        self.host = host
        self.port = port or default_port
        self.timeout = timeout
        self.context = context
        self.sock: socket.socket | None = None
        self._reader: Any = None
        self._host = _host_header(host, self.port, default_port)

    def connect(self) -> None:
        """Open the connection (and its TLS session, checking the hub's name).

        Raises:
            OSError: not reachable, timed out, or TLS failed (``ssl.SSLError``).
        """
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            # as http.client does: a request is one write, but never wait on Nagle for it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
            self._reader = sock.makefile("rb")
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        """Close the connection (idempotent)."""
        reader, sock = self._reader, self.sock
        self._reader = self.sock = None
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()

    def post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, Headers, bytes, bool]:
        """Send one POST and read its answer: (status, reason, headers, body, will close).

        Raises:
            ValueError: a header or the path holds a character that would change the request.
            http.client.HTTPException: the answer is not HTTP, or ends early.
            OSError: the connection failed or timed out.
        """
        self.send_post(path, body, headers)
        return self.answer()

    def send_post(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        """Write one POST; :meth:`answer` reads its answer (from this thread or another,
        once this has returned).

        Raises:
            ValueError: a header or the path holds a character that would change the request.
            http.client.NotConnected: not connected.
            OSError: the connection failed or timed out.
        """
        if self.sock is None:
            raise http.client.NotConnected("connect() first")
        path = path or "/"
        if _BAD_PATH.search(path):
            raise http.client.InvalidURL(f"URL can't contain control characters: {path!r}")
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {self._host}",
            "Accept-Encoding: identity",
            f"Content-Length: {len(body)}",
        ]
        for name, value in headers.items():
            if not name or ":" in name or not _plain(name) or not _plain(value):
                raise ValueError(f"invalid header {name!r}")
            lines.append(f"{name}: {value}")
        lines.append("\r\n")
        self.sock.sendall("\r\n".join(lines).encode("latin-1") + body)

    def _line(self, what: str) -> bytes:
        line: bytes = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong(what)
        return line

    def answer(self) -> tuple[int, str, Headers, bytes, bool]:
        """Read the answer to the request written: (status, reason, headers, body, will close).

        Raises:
            http.client.HTTPException: the answer is not HTTP, or ends early.
            OSError: the connection failed or timed out.
        """
        while True:
            line = self._line("status line")
            if not line:
                raise http.client.RemoteDisconnected(
                    "Remote end closed connection without response"
                )
            version, _, rest = line.decode("iso-8859-1").rstrip("\r\n").partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
                raise http.client.BadStatusLine(repr(line))
            status = int(code)
            headers = self._headers()
            if status >= 200 or status == 101:
                break  # 1xx (100 Continue, 103 Early Hints): the answer follows
        keep = version == "HTTP/1.1" or "keep-alive" in headers.get("Connection", "").lower()
        keep = keep and "close" not in headers.get("Connection", "").lower()
        if status in (101, 204, 304):
            return status, reason.strip(), headers, b"", not keep
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return status, reason.strip(), headers, self._chunked(), not keep
        length = headers.get("Content-Length")
        try:
            size = int(length) if length is not None else -1
        except ValueError:
            size = -1
        if size < 0:  # framed by the connection's end
            return status, reason.strip(), headers, self._reader.read(), True
        return status, reason.strip(), headers, self._exactly(size), not keep

    def _headers(self) -> Headers:
        items: list[tuple[str, str]] = []
        while (line := self._line("header line")) not in (b"\r\n", b"\n", b""):
            if len(items) >= MAX_HEADERS:
                raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
            text = line.decode("iso-8859-1")
            if text[0] in " \t" and items:  # an obsolete folded line continues the last
                name, value = items[-1]
                items[-1] = (name, f"{value} {text.strip()}")
                continue
            name, _, value = text.partition(":")
            items.append((name.strip(), value.strip()))
        return Headers(items)

    def _exactly(self, size: int) -> bytes:
        data: bytes = self._reader.read(size)
        if len(data) < size:
            raise http.client.IncompleteRead(data, size - len(data))
        return data

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self._line("chunk size")
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise http.client.IncompleteRead(b"".join(parts)) from None
            if size < 0:
                raise http.client.IncompleteRead(b"".join(parts))
            if size == 0:
                while self._line("trailer line") not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self._exactly(size))
            self._line("chunk end")


def _plain(text: str) -> bool:
    """No CR or LF (a header that would start another header or the body)."""
    return "\r" not in text and "\n" not in text
