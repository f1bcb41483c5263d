"""Export / import: this connector's encrypted archive, or another's installed here."""

from __future__ import annotations

import datetime
import logging
import socket
from typing import Any

from flask import current_app, make_response, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as BaseResponse

from connector.archive import (
    MAX_ARCHIVE_BYTES,
    MIN_PASSPHRASE,
    ArchiveError,
    export_archive,
    import_archive,
)
from connector.web import services
from connector.web.console.pages import bp, fresh_settings, page

log = logging.getLogger(__name__)


def _archive_page(status: int = 200, **context: Any) -> BaseResponse:
    return page("console/archive.html", status=status, min_passphrase=MIN_PASSPHRASE, **context)


def export_name(host: str, now: datetime.datetime) -> str:
    """The downloaded archive's file name."""
    return f"connector-{host}-{now.strftime('%Y%m%d-%H%M%S')}.export"


@bp.get("/archive")
def archive() -> ResponseReturnValue:
    """Export this connector, or import another's archive."""
    return _archive_page()


@bp.post("/export")
def export() -> ResponseReturnValue:
    """Download the encrypted archive (config, certificate and key, secret key, mapper)."""
    svc = services(current_app)
    passphrase = request.form.get("passphrase", "")
    if passphrase != request.form.get("passphrase2", ""):
        return _archive_page(400, export_error="The two passphrases differ.")
    try:
        data = export_archive(fresh_settings(svc), passphrase)
    except ArchiveError as exc:
        return _archive_page(400, export_error=str(exc))
    log.info("console: configuration exported (%d bytes)", len(data))
    name = export_name(socket.gethostname(), datetime.datetime.now())
    resp = make_response(data)
    resp.headers["Content-Type"] = "application/octet-stream"
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return resp


@bp.post("/import", endpoint="import_archive")
def import_archive_view() -> ResponseReturnValue:
    """Check an archive, report what changes, and (unless only checking) install it."""
    svc = services(current_app)
    upload = request.files.get("archive")
    passphrase = request.form.get("passphrase", "")
    dry_run = request.form.get("dry_run") == "on"
    if upload is None or not upload.filename:
        return _archive_page(400, import_error="Choose the archive file to import.")
    data = upload.read(MAX_ARCHIVE_BYTES + 1)
    try:
        report = import_archive(
            data,
            passphrase,
            str(svc.settings.config_path),
            secret_key_file=svc.settings.secret_key_file,
            dry_run=dry_run,
        )
    except ArchiveError as exc:
        log.warning("console: import refused: %s", exc)
        return _archive_page(400, import_error=str(exc))
    log.info(
        "console: archive %s (%d changes)",
        "imported" if report.applied else "checked",
        len(report.added) + len(report.changed) + len(report.removed),
    )
    return page(
        "console/archive.html",
        reload=report.applied,
        min_passphrase=MIN_PASSPHRASE,
        report=report,
    )
