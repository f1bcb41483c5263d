"""Settings and Directory objects pointed at the real test servers."""

import json

import ldap
import pytest
from configs import ad_config, openldap_config

from connector.directory import Directory
from connector.settings import load_settings


@pytest.fixture
def make_directory(tmp_path):
    """Build Directory objects from config dicts; every one is closed at test end."""
    made = []

    def make(cfg):
        d = tmp_path / f"cfg{len(made)}"
        d.mkdir()
        path = d / "config.json"
        path.write_text(json.dumps(cfg))
        directory = Directory(load_settings(path, environ={}))
        made.append(directory)
        return directory

    yield make
    for directory in made:
        directory.close()


@pytest.fixture
def ldap_dir(slapd, make_directory):
    return make_directory(openldap_config(slapd))


@pytest.fixture
def ad_dir(samba_ad, make_directory):
    return make_directory(ad_config(samba_ad))


@pytest.fixture
def ldap_with(slapd, make_directory):
    """A Directory on the test OpenLDAP with some settings changed."""
    return lambda **overrides: make_directory(openldap_config(slapd, **overrides))


@pytest.fixture
def ad_with(samba_ad, make_directory):
    """A Directory on the test AD with some settings changed."""
    return lambda **overrides: make_directory(ad_config(samba_ad, **overrides))


def admin_connection(server, admin_dn, admin_pw):
    """A python-ldap connection bound as the server's administrator (StartTLS)."""
    conn = ldap.initialize(server.uri)
    conn.set_option(ldap.OPT_REFERRALS, 0)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, server.ca_file)
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    conn.start_tls_s()
    conn.simple_bind_s(admin_dn, admin_pw)
    return conn


@pytest.fixture
def slapd_admin(slapd):
    conn = admin_connection(slapd, slapd.admin_dn, slapd.admin_pw)
    yield conn
    conn.unbind_s()


@pytest.fixture
def ad_admin(samba_ad):
    conn = admin_connection(samba_ad, samba_ad.admin_dn, samba_ad.admin_pw)
    yield conn
    conn.unbind_s()
