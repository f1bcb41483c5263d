"""The setup page's work: the directory form read, tested live and saved (no Flask here).

:func:`save_directory` refuses an incomplete form, checks a pasted CA certificate, builds the
candidate settings, runs every step of :func:`~connector.directory.check.check_directory`
against the real directory with them, and only if all pass writes ``config.json`` (the bind
password sealed, the CA certificate moved next to it). Nothing is written on a failure.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from connector import errors
from connector.channel.provision import SetupResult
from connector.directory.check import Check, check_directory
from connector.settings import TLS_REQUIRE_CERT, Settings, refine, update_config_file

log = logging.getLogger(__name__)

#: The choices of ``LDAP_TLS_REQUIRE_CERT``, as the settings check them.
TLS_CHOICES: tuple[str, ...] = TLS_REQUIRE_CERT
#: What the setup page writes: set in the environment, they would override it.
SETUP_KEYS = frozenset(
    {
        "LDAP_URL",
        "LDAP_URLS",
        "LDAP_BASE",
        "LDAP_BIND_USER",
        "LDAP_BIND_PASSWORD",
        "LDAP_BIND_CREDENTIALS",
        "LDAP_STARTTLS",
        "LDAP_TLS_REQUIRE_CERT",
        "LDAP_CA_FILE",
        "LDAP_USER_BY_NAME",
        "AD_HUB",
        "CONNECTION",
        "REALM",
        "TENANT_SIGNING_KEY",
        "PROVISIONING_TICKET",
    }
)


def overridden(env_keys: Iterable[str]) -> list[str]:
    """The keys the setup page writes that the environment overrides."""
    return [k for k in env_keys if k in SETUP_KEYS]


def directory_form(s: Settings) -> dict[str, Any]:
    """The directory form filled from the settings in force."""
    return {
        "urls": "\n".join(s.ldap_urls),
        "base": s.ldap_base,
        "bind_user": s.ldap_bind_user,
        "password_stored": bool(s.ldap_bind_password),
        "starttls": s.ldap_starttls,
        "require_cert": s.ldap_tls_require_cert,
        "ca_file": s.ldap_ca_file or "",
        "user_filter": s.ldap_user_by_name,
        "sample_user": "",
    }


def ticket_message(result: SetupResult) -> str:
    """What the page says after a setup from a ticket."""
    return (
        f"Connected to the hub {result.ad_hub} as connection {result.connection} "
        f"(realm {result.realm}); certificate {result.kid} "
        f"{'created and ' if result.created_identity else ''}registered."
    )


@dataclasses.dataclass(frozen=True)
class DirectorySubmission:
    """The directory form as sent (bounded; the password kept out of ``repr``)."""

    form: dict[str, Any]
    urls: list[str]
    password: str = dataclasses.field(repr=False)
    ca_pem: str

    @classmethod
    def parse(cls, f: Mapping[str, str]) -> DirectorySubmission:
        """Read the form's fields (each cut to a bound)."""
        form: dict[str, Any] = {
            "urls": f.get("urls", "")[:4096],
            "base": f.get("base", "").strip()[:1024],
            "bind_user": f.get("bind_user", "").strip()[:1024],
            "starttls": f.get("starttls") == "on",
            "require_cert": f.get("require_cert", "demand"),
            "ca_file": f.get("ca_file", "").strip()[:1024],
            "user_filter": f.get("user_filter", "").strip()[:1024],
            "sample_user": f.get("sample_user", "").strip()[:256],
        }
        text = str(form["urls"]).replace(",", " ")
        urls = [u.strip() for u in text.split() if u.strip()]
        return cls(form, urls, f.get("bind_password", ""), f.get("ca_pem", "").strip())

    @property
    def sample_user(self) -> str:
        """The user the test looks up."""
        return str(self.form["sample_user"])

    def problems(self, password_stored: bool) -> list[str]:
        """What is missing before anything can be tested."""
        found = []
        if not self.urls:
            found.append("Enter the URL of at least one LDAP server (ldaps://dc1.example.com).")
        if not self.sample_user:
            found.append("Enter a user to look up: the test finds them before saving.")
        if not self.password and not password_stored:
            found.append("Enter the service account's password.")
        return found

    def changes(self) -> dict[str, Any]:
        """The settings to test (the password plain, the CA file as typed)."""
        changes: dict[str, Any] = {
            "LDAP_URLS": self.urls,
            "LDAP_BASE": self.form["base"],
            "LDAP_BIND_USER": self.form["bind_user"],
            "LDAP_STARTTLS": self.form["starttls"],
            "LDAP_TLS_REQUIRE_CERT": self.form["require_cert"],
            "LDAP_USER_BY_NAME": self.form["user_filter"],
            "LDAP_CA_FILE": self.form["ca_file"] or None,
        }
        if self.password:
            changes["LDAP_BIND_PASSWORD"] = self.password
        return changes


def saved_values(
    changes: Mapping[str, Any], sealed_password: str | None, ca_file: str | None
) -> dict[str, Any]:
    """What goes into ``config.json``: one URL as ``LDAP_URL``, the password only sealed."""
    saved: dict[str, Any] = {k: v for k, v in changes.items() if k != "LDAP_BIND_PASSWORD"}
    urls = list(changes["LDAP_URLS"])
    if len(urls) == 1:
        saved.update(LDAP_URL=urls[0], LDAP_URLS=None)
    else:
        saved.update(LDAP_URLS=urls, LDAP_URL=None)
    if sealed_password is not None:
        saved["LDAP_BIND_CREDENTIALS"] = sealed_password
        saved["LDAP_BIND_PASSWORD"] = None
    if ca_file is not None:
        saved["LDAP_CA_FILE"] = ca_file
    return saved


def failed_step(steps: list[Check]) -> Check | None:
    """The first step that failed (None: all passed)."""
    return next((c for c in steps if not c.ok), None)


@dataclasses.dataclass(frozen=True)
class DirectoryOutcome:
    """What :func:`save_directory` did: ``saved`` or not, and what the page shows."""

    saved: bool
    context: dict[str, Any]


def save_directory(current: Settings, sub: DirectorySubmission) -> DirectoryOutcome:
    """Test the submitted directory settings live and, if every step passes, save them."""
    form = {**sub.form, "password_stored": bool(current.ldap_bind_password)}
    problems = sub.problems(form["password_stored"])
    if problems:
        return DirectoryOutcome(False, {"form": form, "directory_problems": problems})
    changes = sub.changes()
    state = Path(str(current.config_path)).parent
    pending_ca: Path | None = None
    try:
        if sub.ca_pem:
            try:
                x509.load_pem_x509_certificates(sub.ca_pem.encode("ascii", "replace"))
            except ValueError:
                problem = "The pasted CA certificate is not PEM."
                return DirectoryOutcome(False, {"form": form, "directory_problems": [problem]})
            pending_ca = state / f".ldap-ca-{secrets.token_hex(4)}.pem"
            pending_ca.write_text(sub.ca_pem + "\n", encoding="ascii", errors="replace")
            changes["LDAP_CA_FILE"] = str(pending_ca)
        try:
            candidate = refine(current, changes)
        except errors.ConfigError as exc:
            return DirectoryOutcome(False, {"form": form, "directory_problems": exc.problems})
        missing = candidate.directory_problems()
        if missing:
            return DirectoryOutcome(False, {"form": form, "directory_problems": missing})
        steps = check_directory(candidate, sub.sample_user)
        failed = failed_step(steps)
        if failed is not None:
            log.warning(
                "console: directory settings not saved: step %s failed on %s",
                failed.name,
                failed.target,
            )
            return DirectoryOutcome(False, {"form": form, "steps": steps, "failed": failed})
        preview, preview_error = preview_profile(candidate, sub.sample_user)
        sealed = current.secret_box.encrypt(sub.password) if sub.password else None
        final_ca = None
        if pending_ca is not None:
            final_ca = state / "ldap-ca.pem"
            os.replace(pending_ca, final_ca)
            pending_ca = None
        saved = saved_values(changes, sealed, str(final_ca) if final_ca else None)
        update_config_file(Path(str(current.config_path)), saved)
    finally:
        if pending_ca is not None:
            pending_ca.unlink(missing_ok=True)
    log.info("console: directory settings tested and saved (%s)", ", ".join(sub.urls))
    context = {"steps": steps, "saved": True, "preview": preview, "preview_error": preview_error}
    return DirectoryOutcome(True, context)


def preview_profile(settings: Settings, username: str) -> tuple[dict[str, Any] | None, str | None]:
    """The profile ``username`` would get with ``settings``, or why there is none."""
    from connector.directory import Directory

    try:
        directory = Directory(settings)
    except errors.ConfigError as exc:
        return None, str(exc)
    try:
        return directory.get_profile(username), None
    except errors.ConnectorError as exc:
        return None, f"{exc.wire_name}: {exc}"
    finally:
        directory.close()
