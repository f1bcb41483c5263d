"""gunicorn's logger with a cheaper access line: the atoms of the shipped format only.

gunicorn builds every atom of every request for its access line (each request header, each
response header and each environ variable among them, about a hundred strings), whatever the
format uses. With the format shipped in :mod:`connector.gunicorn_config` this logger builds
the five it names; the line is the same. Any other ``access_log_format`` gets gunicorn's own
atoms. The access log stays on by default and is turned off as in any gunicorn
(``accesslog = None`` in the config file, or ``--access-logfile``); the audit line of each
sign-in (``connector.audit``) is separate and not affected.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

#: The access line the connector ships: client, request line, status, bytes, milliseconds.
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


class AccessLogger(Logger):  # type: ignore[misc]
    """gunicorn's :class:`~gunicorn.glogging.Logger`, building only the atoms it must."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        """The atoms of :data:`ACCESS_LOG_FORMAT`, or all of gunicorn's for another format."""
        if self.cfg.access_log_format != ACCESS_LOG_FORMAT:
            return super().atoms(resp, req, environ, request_time)
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
            "s": status,
            "b": "-" if sent is None else str(sent),
            "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
        }
