"""gunicorn's ``gevent_pywsgi`` worker, two costs lighter: the bench's hub server.

``--worker-class hubworker.HubPyWSGIWorker`` (from ``tests/bench``). Per request, gevent's
WSGI server parses the headers with ``http.client.parse_headers`` (the ``email`` package's
feed parser: ≈ 12 % of the hub's CPU per sign-in) and gunicorn's handler builds an access-log
record even when there is no access log (≈ 4 %). Here the headers are read line by line into a
small case-insensitive mapping with what ``gevent.pywsgi.WSGIHandler`` reads from it, and the
record is built only when gunicorn logs access.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

from connector.channel.http1 import MAX_HEADERS, MAX_LINE  # http.client's limits, named once


class Headers:
    """A request's headers as ``gevent.pywsgi`` uses them (``get``, ``getheader``, ``del``,
    ``headers``, ``typeheader``, ``items``, ``status``: non-empty when malformed)."""

    def __init__(self, fp: IO[bytes], *_: Any) -> None:
        self.status = ""
        self._items: list[tuple[str, str]] = []
        for _count in range(MAX_HEADERS + 1):
            line = fp.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.status = "Line too long"
                return
            if line in (b"\r\n", b"\n", b""):
                return
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and self._items:  # an obsolete folded line: part of the last
                name, value = self._items[-1]
                self._items[-1] = (name, f"{value} {text.strip()}")
                continue
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                self.status = "Invalid header line"
                return
            self._items.append((name, value.strip()))
        self.status = "Too many headers"

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower()
        for item, value in self._items:
            if item.lower() == key:
                return value
        return default

    getheader = get

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != key]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    @property
    def headers(self) -> Iterator[str]:
        return (f"{name}: {value}\r\n" for name, value in self._items)

    @property
    def typeheader(self) -> str | None:
        return self.get("content-type")


class HubHandler(PyWSGIHandler):
    """gunicorn's handler with :class:`Headers`, logging access only when it is on."""

    MessageClass = Headers

    def log_request(self) -> None:
        if self.server.log.access_log_enabled:
            super().log_request()


class HubPyWSGIWorker(GeventPyWSGIWorker):
    """``gevent_pywsgi`` with :class:`HubHandler`."""

    wsgi_handler = HubHandler
