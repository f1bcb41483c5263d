"""Setup from a ticket: learn the connection from the hub, register our certificate, save it.

``connector setup --ticket URL`` and the admin console both call :func:`setup_from_ticket`.
A wrong ticket, an unreachable hub and a hub whose TLS certificate is not trusted each end in
a distinct :class:`SetupError` with a message that says what to do.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connector import __version__
from connector.channel.client import (
    HubRejected,
    HubUnavailable,
    HubUntrusted,
    make_session,
    request_json,
)
from connector.channel.hubinfo import HubInfoRefused, check_trust, parse_info
from connector.channel.identity import AgentIdentity
from connector.errors import ConnectorError
from connector.settings import Settings, load_settings, refine
from connector.settings.files import read_config_file, update_config_file
from connector.settings.sealing import seal_config_file
from connector.tenantkey import TenantKeyError, verifying_key
from connector.urls import hub_url_problem

log = logging.getLogger(__name__)


class SetupError(ConnectorError):
    """Setup from a ticket failed; ``reason`` is one of the kinds below."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "ticket", "unreachable", "untrusted", "hub", "confirm"


@dataclasses.dataclass(frozen=True)
class SetupResult:
    """What setup learnt and did."""

    ad_hub: str
    connection: str
    realm: str
    registered: bool
    created_identity: bool
    kid: str


def _info(settings: Settings, ticket: str) -> Any:
    session = make_session(settings)
    try:
        body, _, _ = request_json(session, settings, "GET", f"{ticket}/info", read_timeout=30)
    except HubUntrusted as exc:
        raise SetupError("untrusted", _scrubbed(exc, ticket)) from None
    except HubUnavailable as exc:
        raise SetupError(
            "unreachable", f"{_scrubbed(exc, ticket)}; check the URL, DNS, proxy and firewall"
        ) from None
    except HubRejected as exc:
        if exc.status in (401, 403, 404, 410):
            raise SetupError(
                "ticket",
                f"the hub does not know this ticket ({exc.status}): copy the ticket URL again "
                "from the hub's connection settings",
            ) from None
        raise SetupError("hub", _scrubbed(exc, ticket)) from None
    finally:
        session.close()
    return body


def _scrubbed(exc: Exception, ticket: str) -> str:
    """The text of an error without the ticket URL: it is a bearer secret, and setup errors
    end up in logs (a worker registering again at start). The errors are raised ``from
    None`` for the same reason: a logged traceback would show the chained ones."""
    text = str(exc)
    for secret in (ticket, urlsplit(ticket).path):
        if len(secret) > 1:
            text = text.replace(secret, "<ticket>")
    return text


def register(
    settings: Settings, ticket: str, identity: AgentIdentity, sign_in_endpoint: str | None
) -> str:
    """Register our certificate with the ticket; returns the tenant signing key.

    Raises:
        SetupError: the hub refused or could not be reached.
    """
    session = make_session(settings)
    body = {
        "certs": [identity.cert_b64],
        "signInEndpoint": sign_in_endpoint or "",
        "agentVersion": __version__,
    }
    try:
        data, _, _ = request_json(session, settings, "POST", ticket, json=body, read_timeout=30)
    except HubUntrusted as exc:
        raise SetupError("untrusted", _scrubbed(exc, ticket)) from None
    except HubUnavailable as exc:
        raise SetupError("unreachable", _scrubbed(exc, ticket)) from None
    except HubRejected as exc:
        if exc.status in (401, 403, 404, 410):
            raise SetupError(
                "ticket", f"the hub refused the ticket: {_scrubbed(exc, ticket)}"
            ) from None
        raise SetupError(
            "hub", f"the hub refused the registration: {_scrubbed(exc, ticket)}"
        ) from None
    finally:
        session.close()
    key = data.get("signingKey") if isinstance(data, dict) else None
    if not isinstance(key, str) or not key:
        raise SetupError("hub", "the hub's registration answer has no signingKey")
    try:
        verifying_key(key)
    except TenantKeyError as exc:
        log.warning("setup refused the hub's signing key: %s", exc)
        raise SetupError("hub", f"the hub's signing key is not usable: {exc}") from None
    return key


def setup_from_ticket(
    config_path: str | Path,
    ticket: str,
    *,
    environ: Mapping[str, str] | None = None,
    sign_in_endpoint: str | None = None,
    allow_origins: tuple[str, ...] = (),
    allow_ip_ranges: tuple[str, ...] = (),
) -> SetupResult:
    """Provision the connector from a ticket URL and store the result in ``config.json``.

    ``allow_origins`` and ``allow_ip_ranges`` are the administrator's confirmations (see
    :mod:`connector.channel.hubinfo`), added to ``HUB_TRUSTED_ORIGINS`` and
    ``HUB_ALLOWED_IP_RANGES`` and stored with them.

    Raises:
        SetupError: the ticket is wrong, the hub unreachable or untrusted, its answer malformed,
            or naming an origin or a range that needs confirmation ("confirm").
        ConfigError: the existing config.json is invalid.
    """
    ticket = ticket.strip().rstrip("/")
    problem = hub_url_problem(ticket)
    if problem:
        raise SetupError("ticket", f"the ticket URL {problem}; use the URL given by the hub")
    path = Path(config_path).absolute()
    for level, note in seal_config_file(path, environ):
        log.log(level, "%s", note)
    settings = load_settings(path, environ, require_directory=False)
    confirmations = {
        "HUB_TRUSTED_ORIGINS": tuple(
            dict.fromkeys((*settings.hub_trusted_origins, *allow_origins))
        ),
        "HUB_ALLOWED_IP_RANGES": tuple(
            dict.fromkeys((*settings.hub_allowed_ip_ranges, *allow_ip_ranges))
        ),
    }
    settings = refine(settings, confirmations)  # checks the flags as it checks the file
    try:
        info = parse_info(_info(settings, ticket))
        confirmed = check_trust(
            info, ticket, settings.hub_trusted_origins, settings.hub_allowed_ip_ranges
        )
    except HubInfoRefused as exc:
        message = _scrubbed(exc, ticket)  # a hub may echo the ticket in what it sends
        log.warning("setup refused the hub's ticket information: %s", message)
        raise SetupError(exc.reason, message) from None
    for what in confirmed:
        log.warning("setup: %s accepted on the administrator's confirmation", what)
    ad_hub, connection, realm = info.ad_hub, info.connection, info.realm
    box = settings.secret_box
    identity, created = AgentIdentity.load_or_create(path.parent, box)
    key = register(settings, ticket, identity, sign_in_endpoint or settings.server_url)
    algorithm, _ = verifying_key(key)
    stored_key = box.encrypt(key) if algorithm == "HS256" else key
    changes: dict[str, Any] = {
        "PROVISIONING_TICKET": ticket,
        "AD_HUB": ad_hub,
        "CONNECTION": connection,
        "REALM": realm,
        "TENANT_SIGNING_KEY": stored_key,
        "TENANT_SIGNING_ALG": algorithm,
        "AGENT_CERT_THUMBPRINT": identity.kid,
    }
    if info.post_token_url is not None:
        changes["REALM_POST_TOKEN_URL"] = info.post_token_url
    if info.kerberos is not None:
        changes["KERBEROS_AUTH"] = info.kerberos
    if info.ip_ranges is not None:
        changes["CLIENT_IP_RANGES"] = list(info.ip_ranges)
    for key, values in confirmations.items():
        if values:
            changes[key] = list(values)
    update_config_file(path, changes)
    log.info(
        "set up from ticket: hub %s, connection %s, realm %s, certificate %s",
        ad_hub,
        connection,
        realm,
        identity.kid,
    )
    return SetupResult(ad_hub, connection, realm, True, created, identity.kid)


def ensure_registered(settings: Settings, identity: AgentIdentity) -> bool:
    """Register again if our certificate is not the one recorded at setup. True if it did.

    Raises:
        SetupError: re-registration was needed and failed.
    """
    if settings.agent_cert_thumbprint == identity.kid:
        return False
    if not settings.provisioning_ticket:
        log.warning(
            "the agent certificate changed but there is no PROVISIONING_TICKET to "
            "register it with; run `connector setup --ticket URL`"
        )
        return False
    register(settings, settings.provisioning_ticket, identity, settings.server_url)
    if settings.config_path:
        update_config_file(Path(settings.config_path), {"AGENT_CERT_THUMBPRINT": identity.kid})
    log.info("registered the new agent certificate %s with the hub", identity.kid)
    return True


def pin_signing_alg(settings: Settings) -> bool:
    """Save ``TENANT_SIGNING_ALG`` in a config.json set up before it existed; True if it did.

    Loading derived it from the key by the rules setup uses (a public key disguised as a shared
    secret is refused); from now on the key must be of that kind. A read-only state directory
    keeps the derived value in memory (the log says so).
    """
    path = Path(settings.config_path) if settings.config_path else None
    if path is None or not settings.tenant_signing_alg or "TENANT_SIGNING_ALG" in settings.env_keys:
        return False
    if "TENANT_SIGNING_ALG" in read_config_file(path):
        return False
    try:
        update_config_file(path, {"TENANT_SIGNING_ALG": settings.tenant_signing_alg})
    except OSError as exc:
        log.warning(
            "TENANT_SIGNING_ALG is missing from %s and could not be saved (%s): %s derived "
            "from the tenant signing key is used",
            path,
            exc.strerror or exc,
            settings.tenant_signing_alg,
        )
        return False
    log.warning(
        "TENANT_SIGNING_ALG was missing from %s: %s derived from the tenant signing key and "
        "saved; from now on the key must be of that kind",
        path,
        settings.tenant_signing_alg,
    )
    return True
