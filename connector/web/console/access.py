"""Who may reach the console: the listener, the peer and the Host header (no Flask here).

The console answers only on its own listener (WSGI ``SERVER_PORT`` is the port of
``CONSOLE_BIND``: gunicorn sets it from the listening socket, not from the Host header), to a
loopback TCP peer (``REMOTE_ADDR``, never ``X-Forwarded-For``), under a ``Host`` header that
names loopback (a page that rebinds its own name to 127.0.0.1 cannot drive it). Elsewhere a
console path is a 404; on the console's listener only ``/health``, ``/ready`` and ``/metrics``
are served besides the console.
"""

from __future__ import annotations

import enum
from urllib.parse import urlsplit

from connector.netpolicy import is_loopback_host, parse_address

ALSO_ON_CONSOLE = ("/health", "/ready", "/metrics")

#: Sent with every console page.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


class Decision(enum.Enum):
    """What the listener guard does with a request."""

    SERVE = "serve"
    NOT_FOUND = "not found"
    TO_CONSOLE = "to the console's status page"


def is_console_path(path: str) -> bool:
    """Whether ``path`` is under ``/console``."""
    return path == "/console" or path.startswith("/console/")


def on_console_listener(console_address: tuple[str, int] | None, server_port: str | None) -> bool:
    """Whether the request came in on ``CONSOLE_BIND``'s port (None: no console listener)."""
    return console_address is not None and server_port == str(console_address[1])


def loopback_peer(remote_addr: str | None) -> bool:
    """Whether the TCP peer is a loopback address."""
    addr = parse_address(remote_addr or "")
    return addr is not None and addr.is_loopback


def loopback_host_header(host: str | None) -> bool:
    """Whether the ``Host`` header names loopback (none at all: HTTP/1.0, not a browser)."""
    if not host:
        return True
    return is_loopback_host(urlsplit(f"//{host}").hostname or "")


def decide(
    path: str,
    *,
    console_address: tuple[str, int] | None,
    server_port: str | None,
    remote_addr: str | None,
    host: str | None,
) -> Decision:
    """Console paths only on the console listener, from loopback; nothing else there."""
    on_console = on_console_listener(console_address, server_port)
    if is_console_path(path):
        if on_console and loopback_peer(remote_addr) and loopback_host_header(host):
            return Decision.SERVE
        return Decision.NOT_FOUND
    if on_console:
        if path == "/":
            return Decision.TO_CONSOLE
        if path not in ALSO_ON_CONSOLE:
            return Decision.NOT_FOUND
    return Decision.SERVE
