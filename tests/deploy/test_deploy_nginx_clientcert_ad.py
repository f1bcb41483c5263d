"""Smart-card sign-in against Active Directory (Samba AD DC) through the shipped nginx site.

The test CA issues smart-card-style certificates (Smart Card Logon EKU only): one with the UPN
of ``alice`` in the SAN; one without any name the directory knows, which ``bob``'s
``altSecurityIdentities`` names by issuer and serial number (KB5014754's strong
``X509:<I>…<SR>…``, written here independently of the connector's code); one that only a weak
subject mapping (``X509:<S>…``) names for ``carol`` (refused); one with the UPN of a disabled
account. Mapping order: UPN, then altSecurityIdentities.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from certkit import SMART_CARD_LOGON, Issued, TestCA
from configs import ad_config
from test_deploy_nginx_clientcert import CertSite, curl, landed, message, start_cert_site

pytestmark = pytest.mark.slow


def _ad_serial(issued: Issued) -> str:
    """The serial number as AD's altSecurityIdentities writes it: hex, bytes reversed."""
    raw = issued.cert.serial_number.to_bytes(20, "big").lstrip(b"\0")
    return "".join(f"{b:02x}" for b in reversed(raw))


def _dn(ad: Any, conn: Any, sam: str) -> str:
    found = conn.search_s(ad.base, 2, f"(sAMAccountName={sam})", ["1.1"])
    return str(found[0][0])


@pytest.fixture(scope="module")
def ad_site(tmp_path_factory: pytest.TempPathFactory, samba_ad: Any) -> Iterator[CertSite]:
    import ldap

    tmp = tmp_path_factory.mktemp("deploy-nginx-cert-ad")
    ca = TestCA.create(tmp / "client-ca")
    card = (SMART_CARD_LOGON,)
    certs = {
        "alice": ca.issue("Alice Card", upn=samba_ad.upn("alice"), eku=card),
        "bob": ca.issue("Bob Card", eku=card),
        "carol": ca.issue("Carol Card", eku=card),
        "disabled": ca.issue("Disabled Card", upn=samba_ad.upn("disabled1"), eku=card),
    }
    issuer = "DC=test,DC=example,CN=Test Smart Card CA"  # the CA's DN, most significant first
    conn = samba_ad.connect(samba_ad.admin_dn, samba_ad.admin_pw)
    mappings = {
        "bob": f"X509:<I>{issuer}<SR>{_ad_serial(certs['bob'])}",
        "carol": "X509:<S>CN=Carol Card",
    }
    dns = {sam: _dn(samba_ad, conn, sam) for sam in mappings}
    for sam, value in mappings.items():
        conn.modify_s(dns[sam], [(ldap.MOD_REPLACE, "altSecurityIdentities", [value.encode()])])
    try:
        yield from start_cert_site(
            tmp, ad_config(samba_ad), ca, certs, CLIENT_CERT_MAPPING=["upn", "altsecid"]
        )
    finally:
        for sam in mappings:
            conn.modify_s(dns[sam], [(ldap.MOD_DELETE, "altSecurityIdentities", None)])
        conn.unbind_s()


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_smart_card_lands_at_the_hub_with_ad_groups(
    ad_site: CertSite, samba_ad: Any, user: str
) -> None:
    status, location, body = curl(ad_site, f"ctx-ad-{user}", ad_site.certs[user])
    assert status == 303, message(body) if 'id="message"' in body else body[:500]
    profile = landed(ad_site, location, f"ctx-ad-{user}")
    assert samba_ad.upn(user) in str(profile), profile
    assert set(profile["groups"]) == samba_ad.expected_groups[user], profile


def test_a_weak_mapping_signs_nobody_in(ad_site: CertSite) -> None:
    status, location, body = curl(ad_site, "ctx-ad-weak", ad_site.certs["carol"])
    assert status == 200 and not location
    assert message(body) == (
        "Certificate sign-in did not work. No account matches your certificate. "
        "Sign in with your password."
    )


def test_a_disabled_account_is_refused(ad_site: CertSite) -> None:
    status, location, body = curl(ad_site, "ctx-ad-disabled", ad_site.certs["disabled"])
    assert status == 200 and not location
    assert message(body) == "This account is disabled. Contact your administrator."
