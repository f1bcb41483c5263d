"""Serve the devhub with werkzeug's threaded server: ``python -m connector.devhub.server``.

The first line printed (and flushed) once the socket listens is ``devhub: serving URL``, the
address it listens on with the real port (``--port 0`` picks a free one); the ticket URL and the
page URLs follow (on ``--public-url`` if given). ``tests/hubs.py`` waits for that line.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from werkzeug.serving import WSGIRequestHandler, make_server

from connector.devhub.app import create_app
from connector.devhub.config import DevHubConfig
from connector.devhub.web import DevHub
from connector.logs import configure

log = logging.getLogger("connector.devhub.server")  # not __name__: may run as __main__

_TICKET_PATH = re.compile(r"/tickets/[^/?]+")


def _redact(path: str) -> str:
    """A request path fit for a log: no query string (refs), no ticket id."""
    return _TICKET_PATH.sub("/tickets/<ticket>", path.split("?", 1)[0])


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler: logs through ``logging`` without tickets or query strings, and
    dates responses (the ``Date`` header) on the hub clock."""

    hub_clock: Callable[[], float] = staticmethod(time.time)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info("%s %s %s", self.command, _redact(getattr(self, "path", "")), code)

    def date_time_string(self, timestamp: float | None = None) -> str:
        return super().date_time_string(self.hub_clock() if timestamp is None else timestamp)


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - only for display
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def serve(
    config: DevHubConfig,
    host: str = "127.0.0.1",
    port: int = 8700,
    ssl_context: ssl.SSLContext | tuple[str, str] | None = None,
) -> None:
    """Serve the devhub until interrupted; print its URLs once it listens.

    Args:
        config: the hub's settings.
        host: the address to listen on.
        port: the TCP port; 0 picks a free one (printed).
        ssl_context: serve HTTPS with this context or ``(cert_file, key_file)``.
    """
    app = create_app(config)
    hub = app.extensions["devhub"]
    assert isinstance(hub, DevHub)

    class Handler(_RequestHandler):
        hub_clock = staticmethod(hub.state.now)

    server = make_server(
        host, port, app, threaded=True, request_handler=Handler, ssl_context=ssl_context
    )
    scheme = "https" if ssl_context else "http"
    listening = f"{scheme}://{_display_host(host)}:{server.server_port}"
    base = config.public_base_url.rstrip("/") or listening
    tenant = f"{base}/tenants/{config.tenant}"
    print(f"devhub: serving {listening}", flush=True)
    print(
        f"  ticket URL  {base}/tickets/{config.ticket}\n"
        f"  adHub       {tenant}\n"
        f"  index       {tenant}/\n"
        f"  login       {tenant}/login\n"
        f"  status      {tenant}/status\n"
        f"  admin API   {tenant}/api/state  (no authentication: keep it on loopback)\n"
        f"  connection {config.connection!r}, realm {config.realm!r}, commands {config.alg}, "
        f"lease {config.lease_seconds} s",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.state.close()
        server.server_close()
        log.info("devhub stopped")


def _ip_ranges(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(r for value in values for r in re.split(r"[\s,]+", value) if r)


def build_parser() -> argparse.ArgumentParser:
    """The ``devhub`` command line."""
    p = argparse.ArgumentParser(
        prog="connector devhub",
        description="Run the reference hub of the channel protocol (for demos and tests).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8700, help="TCP port (8700; 0 picks a free one)")
    p.add_argument("--tenant", default="acme", help="tenant name (acme)")
    p.add_argument("--connection", default="corp", help="connection name (corp)")
    p.add_argument("--realm", default="urn:acme", help="realm name (urn:acme)")
    p.add_argument("--domain", default="corp.example.com", help="connectionDomain in the info")
    p.add_argument(
        "--alg", choices=("RS256", "HS256"), default="RS256", help="tenant signing key kind"
    )
    p.add_argument("--lease-seconds", type=int, default=30, help="command lease (30 s)")
    p.add_argument("--ticket", help="fixed ticket id (default: random)")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
    p.add_argument("--kerberos", action="store_true", help="kerberos: true in the ticket info")
    p.add_argument(
        "--ip-ranges",
        action="append",
        default=[],
        metavar="CIDR[,CIDR...]",
        help="ipRanges in the ticket info (repeatable, or comma-separated)",
    )
    p.add_argument("--public-url", default="", help="base URL to hand out instead of the Host")
    p.add_argument(
        "--login-wait", type=float, default=15.0, help="seconds the login page waits (15)"
    )
    p.add_argument(
        "--signin-wait",
        type=float,
        default=10.0,
        help="seconds postTokenUrl waits for a ref not relayed yet (10, at most 10)",
    )
    p.add_argument(
        "--max-waiters-per-client",
        type=int,
        default=8,
        help="browsers waiting for a ref, per client address (8)",
    )
    p.add_argument("--max-waiters", type=int, default=1000, help="... and in all (1000)")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error (info)")
    return p


def config_from_args(args: argparse.Namespace) -> DevHubConfig:
    """The devhub's configuration from its parsed command line.

    Raises:
        ValueError: what is wrong with it (every problem, one message).
    """
    optional = {"ticket": args.ticket} if args.ticket else {}
    return DevHubConfig(
        tenant=args.tenant,
        connection=args.connection,
        realm=args.realm,
        connection_domain=args.domain,
        alg=args.alg,
        lease_seconds=args.lease_seconds,
        kerberos=args.kerberos,
        ip_ranges=_ip_ranges(args.ip_ranges),
        public_base_url=args.public_url,
        login_wait_seconds=args.login_wait,
        signin_wait_seconds=args.signin_wait,
        max_waiters_per_client=args.max_waiters_per_client,
        max_waiters=args.max_waiters,
        **optional,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, then serve until SIGINT or SIGTERM; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    configure(args.log_level)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    ssl_context = (args.tls_cert, args.tls_key) if args.tls_cert else None
    try:
        serve(config, args.host, args.port, ssl_context)
    except OSError as e:
        print(f"devhub: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
