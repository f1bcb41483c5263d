"""The admin console: set the connector up, see that it works, and find what to fix.

Plain server-rendered HTML under ``/console/``, answered only when all of these hold (else
404, so the public listener does not even reveal that it exists):

* the request came in on the console's own listener: WSGI ``SERVER_PORT`` is the port of
  ``CONSOLE_BIND`` (gunicorn sets it from the listening socket, not from the Host header);
* the TCP peer (``REMOTE_ADDR``, never ``X-Forwarded-For``) is a loopback address;
* the ``Host`` header names loopback (``localhost``, 127/8, ``[::1]``): a web page that
  rebinds its own name to 127.0.0.1 cannot drive the console from a browser on this machine.

Every page but the sign-in asks for a signed, 8-hour session cookie first (without one: a
redirect to the sign-in, whatever the method, and nothing else). The password is
``CONSOLE_PASSWORD`` when set, else the one ``connector console-password`` generated (only its
hash is stored: :mod:`connector.consolepw`); with neither, nobody signs in. Sign-ins are
throttled for every worker together, and so is "try a login", per session and in all. Every
change is a POST carrying a CSRF token (double submit: cookie + HMAC keyed from
``secret.key``). On the console's listener only ``/health``, ``/ready`` and ``/metrics`` are
served besides the console.

Pages: status, setup (ticket, then the directory tested live before saving), troubleshoot,
users (search, lookup, try a login), profile mapper, logs, export / import. Saving settings or
importing asks gunicorn's master to restart the workers gracefully (SIGHUP), so the new
settings apply without dropping requests.

The package: plain modules hold the logic and need no Flask app (:mod:`.access` who may reach
the console, :mod:`.auth` the password, sessions and throttles, :mod:`.status` the status
aggregator, :mod:`.setup` the directory form tested and saved, :mod:`.users` search, "try a
login" and the mapper); :mod:`.pages` holds the blueprint and page rendering, and
:mod:`.views` the thin views over them, one module per page group. Importing this package
registers every view on :data:`bp`.
"""

from __future__ import annotations

from connector.web.console import views as views  # registers every view on bp
from connector.web.console.auth import (
    CSRF_COOKIE,
    LOGIN_FAILURES,
    SESSION_COOKIE,
    TRIES_IN_ALL,
    TRIES_PER_SESSION,
)
from connector.web.console.pages import bp

__all__ = [
    "CSRF_COOKIE",
    "LOGIN_FAILURES",
    "SESSION_COOKIE",
    "TRIES_IN_ALL",
    "TRIES_PER_SESSION",
    "bp",
    "views",
]
