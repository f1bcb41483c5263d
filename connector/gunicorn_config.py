"""gunicorn settings and hooks for the connector (``deploy/gunicorn.conf.py`` imports this).

* gthread workers; header limits sized for Kerberos tokens of users in many groups;
* two listeners: the sign-in endpoint (``BIND``) and the admin console on loopback
  (``CONSOLE_BIND``, default 127.0.0.1 at the sign-in port + 1); the app tells them apart by
  the port of the socket a request came in on (WSGI ``SERVER_PORT``);
* ``on_starting`` (master, before the fork) prepares the run directory the workers share:
  Prometheus multiprocess files, worker status, recent log lines; and creates the secret key
  once, so workers never race to create it;
* ``post_worker_init`` starts one hub poller and one status reporter per worker, after the fork;
* ``worker_exit`` drains it on SIGTERM: stop polling, relay the sign-ins it holds, finish held
  commands, post their results;
  ``child_exit`` (master) forgets a dead worker's live metrics and status.

SIGHUP to the master (``systemctl reload connector``; the console does it after saving
settings) starts new workers with the new ``config.json`` and stops the old ones gracefully.
Listener addresses and worker counts are read when the master starts: change them with a
restart.

Settings (bind address, workers, threads) come from the connector's own settings
(``$CONNECTOR_CONFIG`` or ``./config.json`` plus the environment).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from connector.netpolicy import parse_networks
from connector.settings import load_settings

_settings = load_settings(require_directory=False, encrypt_in_place=False)

bind = [_settings.main_bind]
_console = _settings.console_address
if _console is not None:
    bind.append(
        f"[{_console[0]}]:{_console[1]}" if ":" in _console[0] else f"{_console[0]}:{_console[1]}"
    )
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
# A draining worker cuts its waiting long poll, then waits for running commands and posts
# their results; the margin covers a hub that is slow to take them.
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


_run_dir: Path | None = None  # set in the master by on_starting


def _writable_run_dir() -> Path:
    """The run directory from the settings, or a private temporary one if it is not writable."""
    wanted = _settings.run_dir
    try:
        wanted.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=wanted):
            pass
        return wanted
    except OSError:
        return Path(tempfile.mkdtemp(prefix="connector-run-"))


def on_starting(server: Any) -> None:
    """Master, before the workers: the shared run directory and the secret key."""
    global _run_dir
    run = _run_dir = _writable_run_dir()
    if run != _settings.run_dir:
        server.log.warning("%s is not writable; runtime files go to %s", _settings.run_dir, run)
    metrics_dir = run / "metrics"
    metrics_dir.mkdir(mode=0o700, exist_ok=True)
    for stale in [*metrics_dir.glob("*.db"), *(run / "status").glob("*.json")]:
        with contextlib.suppress(OSError):
            stale.unlink()
    from connector.logs import prune_ring

    prune_ring(run / "logs")
    # Read by the workers' settings (RUN_DIR) and by prometheus_client, which must see it
    # before it is first imported: the master never imports it before this point.
    os.environ["RUN_DIR"] = str(run)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        _settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _settings.secret_box.passphrase(create=True)
    except Exception as exc:  # noqa: BLE001 - a read-only state directory is not fatal here
        server.log.warning("the secret key could not be prepared: %s", exc)


def post_worker_init(worker: Any) -> None:
    """Start this worker's status reporter and hub poller (after the fork, app loaded)."""
    services = _services(worker)
    if services is None:
        return
    cfg = worker.cfg
    master = os.getppid()
    services.server_info = {
        "limit_request_field_size": cfg.limit_request_field_size,
        "limit_request_line": cfg.limit_request_line,
        "limit_request_fields": cfg.limit_request_fields,
        "workers": cfg.workers,
        "threads": cfg.threads,
        "bind": list(cfg.bind),
        "master_pid": master,
    }

    def reload_workers() -> None:
        worker.log.info("asking gunicorn (pid %d) to restart the workers with new settings", master)
        os.kill(master, signal.SIGHUP)

    services.reload_workers = reload_workers
    try:
        services.start_reporter()
    except Exception:
        worker.log.exception("the status reporter could not start")
    try:
        services.start_agent()
    except Exception:
        worker.log.exception("the hub agent could not start; the sign-in endpoint still serves")


def on_exit(server: Any) -> None:
    """Master, last: remove a temporary run directory (one under the state dir stays)."""
    if _run_dir is not None and _run_dir != _settings.run_dir:
        shutil.rmtree(_run_dir, ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    """Master: forget a dead worker's live gauges and its status file."""
    if _run_dir is None:
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
    with contextlib.suppress(OSError):
        (_run_dir / "status" / f"worker-{worker.pid}.json").unlink()


def worker_exit(server: Any, worker: Any) -> None:
    """Drain the agent: relay held sign-ins, finish held commands and post their results."""
    services = _services(worker)
    if services is not None:
        services.drain(timeout=max(5.0, graceful_timeout - 5.0))
