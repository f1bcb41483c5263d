"""The service account without a password: SASL GSSAPI with keys from a keytab exported by
samba-tool, against the Samba AD DC."""

import json

import pytest
from configs import ad_config

from connector import errors


@pytest.fixture(scope="module")
def svc_keytab(samba_ad, tmp_path_factory):
    path = tmp_path_factory.mktemp("svc-keytab") / "svc-proxy.keytab"
    samba_ad.samba_tool(
        "domain", "exportkeytab", str(path), f"--principal=svc-proxy@{samba_ad.realm}"
    )
    return str(path)


@pytest.fixture
def krb_env(samba_ad, monkeypatch, tmp_path):
    monkeypatch.setenv("KRB5_CONFIG", samba_ad.krb5_conf)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path}/must-stay-empty")
    monkeypatch.setenv("KRB5RCACHEDIR", str(tmp_path))
    return tmp_path


def gss_config(samba_ad, keytab):
    cfg = ad_config(
        samba_ad,
        LDAP_BIND_MECH="GSSAPI",
        LDAP_BIND_KEYTAB=keytab,
        LDAP_BIND_PRINCIPAL=f"svc-proxy@{samba_ad.realm}",
    )
    del cfg["LDAP_BIND_USER"], cfg["LDAP_BIND_PASSWORD"]
    return cfg


def test_searches_and_logins_with_no_password_anywhere(
    samba_ad, svc_keytab, krb_env, make_directory, tmp_path
):
    cfg = gss_config(samba_ad, svc_keytab)
    assert samba_ad.bind_pw not in json.dumps(cfg)
    directory = make_directory(cfg)
    assert directory.settings.ldap_bind_password in ("", None)
    profile = directory.authenticate("dave", samba_ad.users["dave"])
    assert sorted(profile["groups"]) == sorted(samba_ad.expected_groups["dave"])
    assert [p["nickname"] for p in directory.search_users("car")] == ["carol"]

    # the service connection really is svc-proxy, through Kerberos
    def whoami(conn):
        return conn.ldap.whoami_s()

    try:
        who = directory._run(whoami, "who am I")
    except errors.DirectoryFailure:
        who = None  # Samba has no WhoAmI: the ticket in the private cache says it instead
    assert who is None or "svc-proxy" in who.lower()
    assert directory._gss.acquired == 1
    # plain ldap:// signed by SASL, not StartTLS (Samba refuses sign or seal inside TLS)
    assert directory._run(lambda conn: conn.tls, "transport") is False


def test_the_dc_requires_strong_auth_and_the_keytab_bind_meets_it(
    samba_ad, svc_keytab, krb_env, make_directory
):
    import ldap

    # the oracle: Samba's default "ldap server require strong auth = yes" refuses a simple
    # bind without TLS (what LDAP signing requirements do on Windows)
    plain = ldap.initialize(samba_ad.uri)
    try:
        with pytest.raises(ldap.STRONG_AUTH_REQUIRED):
            plain.simple_bind_s(samba_ad.bind_dn, samba_ad.bind_pw)
    finally:
        plain.unbind_s()
    directory = make_directory(gss_config(samba_ad, svc_keytab))
    assert directory.get_profile("bob")["sAMAccountName"] == "bob"
    assert not (krb_env / "must-stay-empty").exists()  # nothing written to a shared ccache


def test_a_wrong_keytab_is_unavailable_not_a_crash(samba_ad, krb_env, make_directory, tmp_path):
    cfg = gss_config(samba_ad, str(tmp_path / "missing.keytab"))
    directory = make_directory(cfg)
    with pytest.raises(errors.DirectoryUnavailable, match="LDAP_BIND_KEYTAB"):
        directory.authenticate("dave", samba_ad.users["dave"])


def test_check_says_which_mechanism_and_why_a_simple_bind_is_refused(
    samba_ad, svc_keytab, krb_env, tmp_path
):
    from connector.directory.check import check_directory
    from connector.settings import load_settings

    def settings(name, cfg):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(cfg))
        return load_settings(path, environ={})

    steps = check_directory(settings("gss", gss_config(samba_ad, svc_keytab)), "alice")
    assert all(s.ok for s in steps), [s.line() for s in steps]
    (bind,) = [s for s in steps if s.name == "bind"]
    assert "SASL GSSAPI bind with signing as svc-proxy@" in bind.detail

    plain = ad_config(samba_ad, LDAP_STARTTLS=False, LDAP_ALLOW_CLEARTEXT=True)
    steps = check_directory(settings("plain", plain))
    (bind,) = [s for s in steps if s.name == "bind"]
    assert not bind.ok and "strongerAuthRequired" in bind.hint


def test_over_ldaps_the_bind_asks_for_no_sasl_layer_and_samba_s_refusal_is_explained(
    samba_ad, svc_keytab, krb_env, make_directory
):
    """Inside TLS a GSSAPI bind must not sign or seal (Windows and Samba both refuse it there).
    Samba's own answer shows the bind asked for no layer ("Sign or Seal are required", not
    "are not allowed if TLS is used"); with its default strong-auth setting that is the end
    of GSSAPI over ldaps://, and the error says what to do."""
    from connector.errors import DirectoryUnavailable

    cfg = gss_config(samba_ad, svc_keytab)
    cfg.update(LDAP_URL=samba_ad.ldaps_uri, LDAP_STARTTLS=False)
    directory = make_directory(cfg)
    with pytest.raises(DirectoryUnavailable) as caught:
        directory.get_profile("bob")
    message = str(caught.value)
    assert "Sign or Seal are required" in message
    assert "not allowed if TLS is used" not in message
    assert "use an ldap:// URL with LDAP_BIND_MECH=GSSAPI" in message
