"""The bench's hub server: the devhub on one event loop, as a Node.js hub serves it.

``python hubserver.py --port P`` (from ``tests/bench``; the hub's settings in
``BENCH_HUB_CONFIG``, as ``hubapp.py``). One process, one thread for the network: uvloop
(libuv, Node's event loop) and httptools (llhttp, Node's HTTP/1.1 parser), each connection an
``asyncio.Protocol``. A request the devhub answers without waiting — the agent's relay and the
browser's callback for a ``ref`` relayed already, the two requests of every browser sign-in —
is served on the loop by :meth:`connector.devhub.hotpaths.HotPaths.serve_now`, the devhub's
own code; every other request (a long poll, a browser waiting for its relay, results, the
admin API, a relay Flask answers) goes to the devhub's Flask app on a pool of ``THREADS``
threads, where its ``threading`` waits hold a thread and not the loop. A connection's requests
are answered in order; HTTP/1.1 keep-alive (``KEEP_ALIVE`` seconds idle), HTTP/1.0 closes unless
asked not to. Limits: ``MAX_HEADER_BYTES`` of request line and headers (431), the app's
``MAX_CONTENT_LENGTH`` of body (413), malformed requests 400; each then closes the connection.

``--floor`` answers every request on the loop with ``hubcost.floor_app`` instead: what the
server alone costs (``hubcost.py loop --floor``). The first line printed once it listens is
``devhub: serving http://127.0.0.1:PORT``, as the devhub's own server prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import email.utils
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import httptools

log = logging.getLogger("hubserver")

THREADS = 64  #: the pool for requests that may wait (as the gthread hub had)
KEEP_ALIVE = 30.0  #: seconds an idle connection is kept
MAX_HEADER_BYTES = 65536  #: request line and headers
MAX_QUEUED = 16  #: pipelined requests a connection may have waiting before reading pauses
MAX_HEADER_NAMES = 512  #: header names whose environ key is remembered

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
NowApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes] | None]  # serve_now
Answer = tuple[str, list[tuple[str, str]], bytes]

_REASONS = {400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large"}
_NO_BODY = ("1", "204", "304")  # status prefixes answered without a body
_FAILED: Answer = ("500 Internal Server Error", [("Content-Type", "text/plain")], b"")


class _Date:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._text = now, email.utils.formatdate(now, usegmt=True)
        return self._text


def call_wsgi(app: WSGIApp | NowApp, environ: dict[str, Any]) -> Answer | None:
    """Run a WSGI app to the end: its status, headers and whole body; None if it answered
    None instead of a body (``serve_now``: not answered there)."""
    started: list[Any] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return written.append

    result = app(environ, start_response)
    if result is None:
        return None
    body = drain(result)
    if not started:
        raise RuntimeError("the app returned without calling start_response")
    return started[0], started[1], b"".join(written) + body


def drain(result: Iterable[bytes]) -> bytes:
    """A WSGI result's whole body; the result closed (WSGI's ``close``) in any case."""
    try:
        return b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _error(status: int) -> Answer:
    body = f"{status} {_REASONS[status]}\n".encode()
    return f"{status} {_REASONS[status]}", [("Content-Type", "text/plain")], body


class _Request:
    """One parsed request, waiting for its answer."""

    __slots__ = ("environ", "keep_alive")

    def __init__(self, environ: dict[str, Any], keep_alive: bool) -> None:
        self.environ = environ
        self.keep_alive = keep_alive


class Server:
    """The devhub's WSGI app (``app``) and, in front of it, what answers on the loop (``now``:
    a ``serve_now``, returning None to hand the request to the pool)."""

    def __init__(
        self,
        app: WSGIApp,
        now: NowApp,
        max_body: int,
        port: int,
    ) -> None:
        self.app = app
        self.now = now
        self.max_body = max_body
        self.port = port
        self.date = _Date()
        self.pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="hub")
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.counts = collections.Counter[str]()  #: requests answered on the loop, in the pool
        self.base: dict[str, Any] = {  # what every request's environ starts from
            "SCRIPT_NAME": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(port),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        self.header_keys: dict[bytes, str] = {}  #: header name -> environ key ("": dropped)

    def header_key(self, raw_name: bytes) -> str:
        """The environ key of a header name ("" for a name with "_": ``X_A`` would be taken
        for ``X-A``), remembered for the next request (the first ``MAX_HEADER_NAMES``)."""
        name = raw_name.decode("latin-1").upper()
        if "_" in name:
            key = ""
        else:
            key = name.replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
        if len(self.header_keys) < MAX_HEADER_NAMES:
            self.header_keys[raw_name] = key
        return key

    def sweep(self) -> None:
        """Close the connections idle for ``KEEP_ALIVE`` seconds; again in a few seconds."""
        assert self.loop is not None
        horizon = self.loop.time() - KEEP_ALIVE
        idle = [c for c in self.connections if c.idle_since is not None and c.idle_since < horizon]
        for conn in idle:
            conn.close()
        self.loop.call_later(KEEP_ALIVE / 6, self.sweep)


class Connection(asyncio.Protocol):
    """One client connection: requests parsed as they come, answered in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: collections.deque[_Request] = collections.deque()
        self.busy = False  #: a request of this connection is in the pool
        self.closing = False
        self.idle_since: float | None = None
        self.remote = ("", "0")
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head = 0  #: request line and headers, once complete

    # ---- asyncio ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.remote = (peer[0], str(peer[1])) if peer else ("", "0")
        self.server.connections.add(self)
        self.idle_since = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)

    def eof_received(self) -> None:
        self.closing = True  # before the transport closes the socket (a long poll's check)

    def fileno(self) -> int:
        """The socket's descriptor, -1 once the client went away: the devhub's long poll
        checks it from its pool thread (``environ['devhub.socket']``)."""
        if self.closing or self.transport is None:
            return -1
        sock = self.transport.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400)
        except (httptools.HttpParserError, _TooLarge) as e:
            # a callback's _TooLarge comes wrapped in httptools' HttpParserCallbackError
            cause = e if isinstance(e, _TooLarge) else e.__context__
            self._refuse(cause.status if isinstance(cause, _TooLarge) else 400)

    # ---- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size, self._head = b"", [], [], 0, 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._grow(len(name) + len(value) + 4)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._size += len(body)
        if self._size - self._head > self.server.max_body:
            raise _TooLarge(413)

    def on_headers_complete(self) -> None:
        self._head = self._size
        for name, value in self._headers:
            if name.lower() == b"content-length" and value.strip().isdigit():
                if int(value) > self.server.max_body:  # refused before its body comes
                    raise _TooLarge(413)

    def on_message_complete(self) -> None:
        request = _Request(self._environ(), self.parser.should_keep_alive())
        self.queue.append(request)
        if len(self.queue) > MAX_QUEUED and self.transport is not None:
            self.transport.pause_reading()
        if not self.busy:
            self._next()

    def _grow(self, n: int) -> None:
        self._size += n
        if self._size > MAX_HEADER_BYTES:
            raise _TooLarge(431)

    # ---- requests -------------------------------------------------------------------------

    def _environ(self) -> dict[str, Any]:
        server = self.server
        url = self._url.partition(b"#")[0] if b"#" in self._url else self._url
        path, _, query = url.partition(b"?")
        body = b"".join(self._body)
        environ = server.base.copy()
        environ["REQUEST_METHOD"] = self.parser.get_method().decode("latin-1")
        environ["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/" + self.parser.get_http_version()
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = self.remote
        environ["wsgi.input"] = io.BytesIO(body)
        keys = server.header_keys
        for raw_name, raw_value in self._headers:
            key = keys.get(raw_name)
            if key is None:
                key = server.header_key(raw_name)
            if not key:  # a name with "_": dropped
                continue
            value = raw_value.decode("latin-1").strip()
            if key in environ and key.startswith("HTTP_"):
                value = f"{environ[key]},{value}"
            environ[key] = value
        if body or "CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            environ["CONTENT_LENGTH"] = str(len(body))  # a chunked body: its decoded length
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return environ

    def _next(self) -> None:
        """Answer the queued requests in order: on the loop while they can be, else one in
        the pool (the rest wait for it)."""
        server = self.server
        while self.queue and not self.closing:
            request = self.queue.popleft()
            try:
                answer = call_wsgi(server.now, request.environ)
            except Exception:
                log.exception("the hub failed a request on the loop")
                answer = _FAILED
            server.counts["pool" if answer is None else "loop"] += 1
            if answer is None:
                self.busy = True
                request.environ["devhub.socket"] = self
                future = server.pool.submit(call_wsgi, server.app, request.environ)
                future.add_done_callback(
                    lambda f, r=request: server.loop.call_soon_threadsafe(self._pooled, r, f)  # type: ignore[union-attr]
                )
                return
            self._write(request, answer)
        if not self.queue and not self.closing:
            self.idle_since = asyncio.get_running_loop().time()
            if self.transport is not None:
                self.transport.resume_reading()

    def _pooled(self, request: _Request, future: concurrent.futures.Future[Answer | None]) -> None:
        self.busy = False
        try:
            answer = future.result() or _FAILED  # the app always answers
        except Exception:
            log.exception("the hub failed a request")
            answer = _FAILED
        if not self.closing:
            self._write(request, answer)
            self._next()

    def _write(self, request: _Request, answer: Answer) -> None:
        status, headers, body = answer
        method = request.environ["REQUEST_METHOD"]
        if method == "HEAD" or status.startswith(_NO_BODY):
            body = b""
        lines = [f"HTTP/1.1 {status}", f"Date: {self.server.date()}"]
        has_length = False
        for name, value in headers:
            lowered = name.lower()
            if lowered in ("connection", "transfer-encoding", "date"):
                continue
            has_length = has_length or lowered == "content-length"
            lines.append(f"{name}: {value}")
        if not has_length and method != "HEAD":
            lines.append(f"Content-Length: {len(body)}")
        if not request.keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        assert self.transport is not None
        self.transport.write(head + body if body else head)
        if not request.keep_alive:
            self.close()

    def _refuse(self, status: int) -> None:
        """A malformed or oversized request: its error, then the connection closes."""
        self.queue.clear()
        if self.transport is not None and not self.busy and not self.closing:
            fake = _Request({"REQUEST_METHOD": "GET"}, keep_alive=False)
            self._write(fake, _error(status))
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class _TooLarge(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _devhub() -> tuple[WSGIApp, Any, int]:
    """The devhub of ``BENCH_HUB_CONFIG``: its WSGI app, its hot paths, its body limit."""
    from connector.devhub.app import create_app
    from connector.devhub.config import DevHubConfig
    from connector.devhub.hotpaths import HotPaths

    cfg = json.loads(os.environ["BENCH_HUB_CONFIG"])
    cfg["ip_ranges"] = tuple(cfg.get("ip_ranges", ()))
    app = create_app(DevHubConfig(**cfg))
    hot = app.wsgi_app
    assert isinstance(hot, HotPaths)
    return app, hot.serve_now, int(app.config["MAX_CONTENT_LENGTH"])


async def serve(host: str, port: int, floor: bool) -> None:
    if floor:
        from hubcost import floor_app

        app: WSGIApp = floor_app
        server = Server(app, floor_app, 1 << 20, port)
    else:
        app, now, max_body = _devhub()
        server = Server(app, now, max_body, port)
    loop = asyncio.get_running_loop()
    server.loop = loop
    listener = await loop.create_server(lambda: Connection(server), host, port, backlog=1024)
    server.port = listener.sockets[0].getsockname()[1]
    server.base["SERVER_PORT"] = str(server.port)
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set_result, None)
    server.sweep()
    print(f"devhub: serving http://{host}:{server.port}", flush=True)
    await stop
    print(f"hubserver: requests answered {dict(server.counts)}", flush=True)
    listener.close()
    for conn in list(server.connections):
        conn.close()
    server.pool.shutdown(wait=False, cancel_futures=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--floor", action="store_true", help="a do-nothing app, on the loop")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        import uvloop
    except ImportError:  # the bench says so; asyncio's own loop serves the same way, slower
        print("hubserver: uvloop is not installed: asyncio's own event loop", flush=True)
        asyncio.run(serve(args.host, args.port, args.floor))
    else:
        uvloop.run(serve(args.host, args.port, args.floor))
    # now, not once the pool's threads are done: a long poll may wait for a minute more (the
    # hub's state is in memory: nothing to save)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
