"""gunicorn settings and hooks for the connector (``deploy/gunicorn.conf.py`` imports this).

* gthread workers; header limits sized for Kerberos tokens of users in many groups;
* https when a certificate is configured (``SSL_PFX``, see :mod:`connector.listener`): its key
  and certificates are written to ``tls-server.pem`` (0600) in the run directory for
  ``certfile``; without one, the sign-in endpoint listens on loopback only unless ``BIND``
  says otherwise, and the master says so at start;
* two listeners: the sign-in endpoint (``BIND``) and the admin console on loopback
  (``CONSOLE_BIND``, default 127.0.0.1 at the sign-in port + 1); the app tells them apart by
  the port of the socket a request came in on (WSGI ``SERVER_PORT``);
* client certificates (``CLIENT_CERT_AUTH``) when gunicorn serves https: asked optionally in
  the TLS handshake against ``CLIENT_CERT_CA_FILE``, read by the app from the socket;
* ``on_starting`` (master, before the fork) prepares the run directory the workers share:
  Prometheus multiprocess files, worker status, recent log lines; and creates the secret key
  once, so workers never race to create it; it seals a plain password in ``config.json``
  (:func:`connector.settings.seal_config_file`, as ``on_reload`` does on SIGHUP): the workers
  only read the file; it says how to get the console's password;
* ``pre_fork`` (master) chooses each worker's CPU and ``post_fork`` pins the worker there
  (``WEB_CPU_AFFINITY``, see :mod:`connector.affinity`);
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
import logging
import os
import shutil
import signal
import ssl
import tempfile
from pathlib import Path
from typing import Any

from connector import affinity
from connector.accesslog import ACCESS_LOG_FORMAT
from connector.headcap import MAX_REQUEST_HEAD, cap_request_head
from connector.listener import start_notes, write_server_pem
from connector.netpolicy import parse_networks
from connector.settings import load_settings
from connector.settings.sealing import seal_config_file

_settings = load_settings(require_directory=False, encrypt_in_place=False)


def _server_pem() -> tuple[Path | None, Any]:
    """Write SSL_PFX's key and certificates for gunicorn (None: no certificate configured)."""
    if not _settings.ssl_pfx:
        return None, None
    try:
        return write_server_pem(_settings, _settings.run_dir)
    except OSError:  # a read-only state directory: a private temporary one
        return write_server_pem(_settings, Path(tempfile.mkdtemp(prefix="connector-tls-")))


# Read once, when the master imports this module (a reload keeps the file and the values).
_tls_pem, _tls_cert = _server_pem()
certfile = keyfile = str(_tls_pem) if _tls_pem is not None else None
if certfile and _settings.client_cert_auth and _settings.client_cert_ca_file:
    # Client certificates asked in the handshake (optional: no certificate, the form or
    # Kerberos as before). OpenSSL refuses, at the handshake, one that does not chain to the
    # CA file or is out of date; the app verifies what it gets again (connector.clientcert).
    cert_reqs = ssl.CERT_OPTIONAL
    ca_certs = _settings.client_cert_ca_file

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
# The whole head is capped too (connector.headcap, installed in post_fork): one such field
# and 64 KB for the rest, not 100 fields of 128 KB.
limit_request_field_size = 131072
limit_request_line = 8190
limit_request_fields = 100
# A draining worker cuts its waiting long poll, then waits for running commands and posts
# their results; the margin covers a hub that is slow to take them.
graceful_timeout = int(_settings.poll_wait_seconds) + 35
timeout = 60
keepalive = 5
accesslog = "-"  # None turns it off; the audit line of each sign-in is apart
access_log_format = ACCESS_LOG_FORMAT
logger_class = "connector.accesslog.AccessLogger"  # the same line, fewer atoms built
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
    for level, note in start_notes(_settings, _tls_cert):
        (server.log.warning if level >= logging.WARNING else server.log.info)(note)
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
    _seal(server)
    _say_how_to_sign_in(server)


def _seal(server: Any) -> None:
    """Seal the plain secrets of config.json, once, in the master (the workers only read it)."""
    try:
        notes = seal_config_file(_settings.config_path)
    except Exception as exc:  # noqa: BLE001 - the workers report a bad config.json themselves
        server.log.warning("config.json not sealed: %s", exc)
        return
    for level, note in notes:
        (server.log.warning if level >= logging.WARNING else server.log.info)(note)


def on_reload(server: Any) -> None:
    """Master, on SIGHUP, before the new workers read config.json: seal it again."""
    _seal(server)


def _say_how_to_sign_in(server: Any) -> None:
    """Where the console's password comes from (never the password)."""
    from connector import consolepw

    address = _settings.console_address
    if address is None:
        return
    url = consolepw.console_url(address)
    if _settings.console_password:
        server.log.info("admin console %s: the password is CONSOLE_PASSWORD", url)
    elif consolepw.read_record(_settings.state_dir):
        server.log.info("admin console %s: password made by `connector console-password`", url)
    else:
        server.log.warning(
            "admin console %s: no password yet; make one (it is printed once) with: "
            "connector --config %s console-password",
            url,
            _settings.config_path,
        )


_head_capped = False  # set in each worker by post_fork


def pre_fork(server: Any, worker: Any) -> None:
    """Master, before each worker: the CPU it will run on (``WEB_CPU_AFFINITY``)."""
    if _settings.web_cpu_affinity:
        affinity.assign(worker, server.WORKERS.values())


def post_fork(server: Any, worker: Any) -> None:
    """Worker, first: run on its CPU (:mod:`connector.affinity`); cap the size of a whole
    request head (see :mod:`connector.headcap`)."""
    try:
        cpu = affinity.pin(worker)
    except OSError as exc:
        worker.log.warning(
            "worker %s not pinned to a CPU: %s (a seccomp filter without sched_setaffinity? "
            "WEB_CPU_AFFINITY=false stops trying)",
            os.getpid(),
            exc,
        )
    else:
        if cpu is not None:
            worker.log.info("worker %s runs on CPU %d (WEB_CPU_AFFINITY)", os.getpid(), cpu)
    global _head_capped
    _head_capped = cap_request_head(MAX_REQUEST_HEAD)
    if not _head_capped:
        worker.log.warning(
            "this gunicorn's parser cannot be capped at %d bytes per request head; only "
            "limit_request_fields x limit_request_field_size bound it",
            MAX_REQUEST_HEAD,
        )


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
        "max_request_head": MAX_REQUEST_HEAD if _head_capped else None,
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
    if _tls_pem is not None:  # the unencrypted key is on disk only while gunicorn runs
        _tls_pem.unlink(missing_ok=True)
        if _tls_pem.parent.name.startswith("connector-tls-"):
            shutil.rmtree(_tls_pem.parent, ignore_errors=True)


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
