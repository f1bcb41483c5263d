"""The hub's ticket information (protocol §1.1), checked before setup believes any of it.

Setup stores what ``GET {ticket}/info`` says, and the connector then sends passwords to
``adHub`` and browsers to ``postTokenUrl`` and offers Kerberos to ``ipRanges``. So the answer
is parsed field by field (a malformed one is refused whole, naming the field), both URLs must
be https (http only to a loopback hub) and on the ticket's own origin, and every range must lie
inside a private one (RFC 1918, ULA, loopback) — unless the administrator confirmed that origin
(``HUB_TRUSTED_ORIGINS``, ``connector setup --allow-hub-origin``) or that range
(``HUB_ALLOWED_IP_RANGES``, ``--allow-ip-range``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from connector.channel.client import PROTOCOL_VERSION
from connector.errors import ConnectorError
from connector.urls import hub_url_problem

PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "fc00::/7", "::1/128")
)
_DEFAULT_PORTS = {"https": 443, "http": 80}


class HubInfoRefused(ConnectorError):
    """The ticket information is malformed (``reason`` "hub") or names an origin or a range
    the administrator has not confirmed (``reason`` "confirm")."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class TicketInfo:
    """What setup takes from the ticket information; None where the hub said nothing."""

    ad_hub: str
    connection: str
    realm: str
    post_token_url: str | None
    kerberos: bool | None
    ip_ranges: tuple[str, ...] | None


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, the scheme's default port left out."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return f"{scheme}://{host}" + (
        f":{port}" if port and port != _DEFAULT_PORTS.get(scheme) else ""
    )


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def inside(network: Network, networks: Iterable[Network]) -> bool:
    """Whether ``network`` lies wholly inside one of ``networks``."""
    return any(
        network.version == other.version and network.subnet_of(other)  # type: ignore[arg-type]
        for other in networks
    )


def _bad(field: str, what: str) -> HubInfoRefused:
    return HubInfoRefused("hub", f"the hub's ticket information is malformed: {field} {what}")


def _text(value: Any, field: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 2048:
        raise _bad(field, "must be non-empty text")
    return value.strip()


def _url(value: Any, field: str, *, required: bool = True) -> str | None:
    url = _text(value, field, required=required)
    if url is None:
        return None
    problem = hub_url_problem(url)
    if problem:
        raise HubInfoRefused("hub", f"the hub's {field} {url!r} {problem}")
    return url.rstrip("/")


def _ranges(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise _bad("ipRanges", "must be a list of CIDR ranges")
    for text in value:
        try:
            ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise _bad("ipRanges", f"holds {text[:60]!r}, which is not a CIDR range") from None
    return tuple(r.strip() for r in value)


def parse_info(body: Any) -> TicketInfo:
    """The ticket information, every field's type and shape checked.

    Raises:
        HubInfoRefused: a field is missing, of the wrong type or malformed.
    """
    if not isinstance(body, dict):
        raise _bad("the answer", "is not an object")
    version = body.get("protocolVersion")
    if version != int(PROTOCOL_VERSION) or isinstance(version, bool):
        raise _bad(
            "protocolVersion", f"is {version!r}; this connector speaks version {PROTOCOL_VERSION}"
        )
    realm = body.get("realm")
    if not isinstance(realm, dict):
        raise _bad("realm", "must be an object with name and postTokenUrl")
    _text(body.get("connectionDomain"), "connectionDomain", required=False)
    kerberos = body.get("kerberos")
    if kerberos is not None and not isinstance(kerberos, bool):
        raise _bad("kerberos", "must be true or false")
    ad_hub = _url(body.get("adHub"), "adHub")
    connection = _text(body.get("connectionName"), "connectionName")
    name = _text(realm.get("name"), "realm.name")
    assert ad_hub is not None and connection is not None and name is not None
    return TicketInfo(
        ad_hub=ad_hub,
        connection=connection,
        realm=name,
        post_token_url=_url(realm.get("postTokenUrl"), "realm.postTokenUrl", required=False),
        kerberos=kerberos,
        ip_ranges=_ranges(body.get("ipRanges")),
    )


def check_trust(
    info: TicketInfo,
    ticket: str,
    trusted_origins: Iterable[str],
    allowed_ranges: Iterable[str],
) -> list[str]:
    """Refuse URLs off the ticket's origin and ranges wider than private ones, unless the
    administrator confirmed them; what was accepted on confirmation (for the log).

    Raises:
        HubInfoRefused: an origin or a range needs the administrator's confirmation.
    """
    own = origin(ticket)
    trusted = {own, *(origin(o) for o in trusted_origins)}
    confirmed: list[str] = []
    for field, url in (("adHub", info.ad_hub), ("realm.postTokenUrl", info.post_token_url)):
        if url is None:
            continue
        if origin(url) not in trusted:
            raise HubInfoRefused(
                "confirm",
                f"the hub's {field} is on {origin(url)}, not on the ticket's origin {own}; "
                f"if that is right, confirm it: connector setup --allow-hub-origin "
                f"{origin(url)} (or HUB_TRUSTED_ORIGINS in config.json)",
            )
        if origin(url) != own:
            confirmed.append(f"{field} on {origin(url)}")
    allowed = [ipaddress.ip_network(r, strict=False) for r in allowed_ranges]
    for text in info.ip_ranges or ():
        network = ipaddress.ip_network(text, strict=False)
        if inside(network, PRIVATE_NETWORKS):
            continue
        if not inside(network, allowed):
            raise HubInfoRefused(
                "confirm",
                f"the hub's ipRanges include {network}, which is not a private range: every "
                "client there would be offered Kerberos sign-in; if that is right, confirm it: "
                f"connector setup --allow-ip-range {network} (or HUB_ALLOWED_IP_RANGES in "
                "config.json)",
            )
        confirmed.append(f"ipRanges {network}")
    return confirmed
