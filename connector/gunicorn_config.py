"""gunicorn settings and hooks for the connector (``deploy/gunicorn.conf.py`` imports this).

* gthread workers; header limits sized for Kerberos tokens of users in many groups;
* ``post_worker_init`` starts one hub poller per worker, after the fork;
* ``worker_exit`` drains it on SIGTERM: stop polling, finish held commands, post their results.

Settings (bind address, workers, threads) come from the connector's own settings
(``$CONNECTOR_CONFIG`` or ``./config.json`` plus the environment).
"""

from __future__ import annotations

from typing import Any

from connector.netpolicy import parse_networks
from connector.settings import load_settings

_settings = load_settings(require_directory=False, encrypt_in_place=False)

bind = _settings.bind or f"0.0.0.0:{_settings.port}"
# One trust list: the proxies whose X-Forwarded-For the app believes (TRUSTED_PROXIES) are the
# only peers whose X-Forwarded-Proto gunicorn believes (wsgi.url_scheme, so Secure cookies
# behind a TLS proxy); none listed, nobody (gunicorn's own default trusts 127.0.0.1 and ::1).
forwarded_allow_ips = ",".join(str(n) for n in parse_networks(_settings.trusted_proxies))
worker_class = "gthread"
workers = _settings.web_workers
threads = _settings.web_threads
# Kerberos tokens exceed 8 KB for users in many groups. The app refuses an Authorization
# value over 64 KB (connector.kerberos.MAX_HEADER_LENGTH) with the form and a clear reason;
# gunicorn's per-line limit is twice that so such a header reaches the app (not a bare 431).
limit_request_field_size = 131072
limit_request_line = 8190
limit_request_fields = 100
# A draining worker may wait for a long poll to return, then for running commands.
graceful_timeout = int(_settings.poll_wait_seconds) + 35
timeout = 60
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
errorlog = "-"
control_socket_disable = True


def _services(worker: Any) -> Any:
    app = getattr(worker, "wsgi", None)
    extensions = getattr(app, "extensions", None)
    return extensions.get("connector") if isinstance(extensions, dict) else None


def post_worker_init(worker: Any) -> None:
    """Start this worker's hub poller (after the fork, once the app is loaded)."""
    services = _services(worker)
    if services is None:
        return
    try:
        services.start_agent()
    except Exception:
        worker.log.exception("the hub agent could not start; the sign-in endpoint still serves")


def worker_exit(server: Any, worker: Any) -> None:
    """Drain the poller: finish held commands and post their results before exiting."""
    services = _services(worker)
    if services is not None:
        services.drain(timeout=max(5.0, graceful_timeout - 5.0))
