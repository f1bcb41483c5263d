"""Settings: Node key names and defaults, env overrides, one error listing every problem,
and the service password encrypted at rest."""

import dataclasses
import json
import logging
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connector.errors import ConfigError
from connector.secretbox import SecretBox
from connector.settings import Settings, describe, load_settings, seal_config_file

BASE = {
    "LDAP_URL": "ldap://127.0.0.1:389",
    "LDAP_BASE": "dc=example,dc=test",
    "LDAP_BIND_USER": "cn=svc,dc=example,dc=test",
}


def _public_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def write(tmp_path, data):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_node_defaults(tmp_path):
    s = load_settings(write(tmp_path, {**BASE, "LDAP_BIND_PASSWORD": "pw"}), environ={})
    assert s.ldap_user_by_name == "(sAMAccountName={0})"
    assert s.ldap_search_groups == "(member:1.2.840.113556.1.4.1941:={0})"
    assert s.ldap_search_query == "(&(objectCategory=person)(anr={0}))"
    assert s.group_property == "cn"
    assert s.allow_password_expired is False
    assert s.enable_write_back is False
    assert s.ldap_urls == ("ldap://127.0.0.1:389",)
    assert s.groups_base == "dc=example,dc=test"


def test_node_config_json_loads_unchanged(tmp_path):
    """A config.json as the Node connector writes it, with keys this one ignores."""
    node = {
        **BASE,
        "LDAP_BIND_PASSWORD": "pw",
        "AD_HUB": "https://hub.example/tenants/acme",
        "CONNECTION": "corp-ad",
        "REALM": "urn:auth0:acme",
        "PROVISIONING_TICKET": "https://hub.example/p/ad/abc",
        "TENANT_SIGNING_KEY": _public_pem(),
        "WSFED_ISSUER": "urn:auth0:acme",
        "SESSION_SECRET": "x",
        "LDAP_HEARTBEAT_SECONDS": 60,
        "KERBEROS_AUTH": "false",
        "PORT": "4000",
        "GROUPS_CACHE_SECONDS": 60,
        "ALLOW_PASSWORD_EXPIRED": "true",
    }
    s = load_settings(write(tmp_path, node), environ={})
    assert s.connection == "corp-ad"
    assert s.kerberos_auth is False and s.port == 4000
    assert s.allow_password_expired is True
    assert s.groups_cache_seconds == 60
    assert s.ignored_keys == ()


def test_environment_overrides_file(tmp_path):
    path = write(tmp_path, {**BASE, "LDAP_BIND_PASSWORD": "pw", "LDAP_POOL_SIZE": 2})
    s = load_settings(path, environ={"LDAP_POOL_SIZE": "7", "LDAP_STARTTLS": "yes"})
    assert s.ldap_pool_size == 7
    assert s.ldap_starttls is True


def test_every_problem_reported_at_once(tmp_path):
    path = write(
        tmp_path,
        {
            "LDAP_URL": "http://wrong",
            "LDAP_POOL_SIZE": "many",
            "LDAP_STARTTLS": "perhaps",
            "LDAP_USER_BY_NAME": "(uid=fixed)",
            "GROUPS_STRATEGY": "magic",
            "LDAP_CONNECT_TIMEOUT": -1,
        },
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    problems = info.value.problems
    text = str(info.value)
    for key in (
        "LDAP_URL",
        "LDAP_POOL_SIZE",
        "LDAP_STARTTLS",
        "LDAP_USER_BY_NAME",
        "GROUPS_STRATEGY",
        "LDAP_CONNECT_TIMEOUT",
        "LDAP_BASE",
        "LDAP_BIND_USER",
        "LDAP_BIND_PASSWORD",
    ):
        assert any(p.startswith(key) for p in problems), (key, problems)
        assert key in text
    assert str(path) in text


def test_invalid_json_is_a_clear_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(path, environ={})


def test_several_urls_for_failover(tmp_path):
    path = write(
        tmp_path,
        {
            **BASE,
            "LDAP_URL": "ldap://a:389 ldap://b:389",
            "LDAP_URLS": ["ldaps://c:636", "ldap://a:389"],
            "LDAP_BIND_PASSWORD": "pw",
        },
    )
    s = load_settings(path, environ={})
    assert s.ldap_urls == ("ldap://a:389", "ldap://b:389", "ldaps://c:636")


def test_loading_never_writes_a_plain_password_is_used_as_it_is(tmp_path):
    path = write(tmp_path, {**BASE, "LDAP_BIND_PASSWORD": "s3cret-Pw"})
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    s = load_settings(path, environ={})
    assert s.ldap_bind_password == "s3cret-Pw"
    assert "s3cret-Pw" not in repr(s)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no key made either
    assert s.unsealed_keys == ("LDAP_BIND_PASSWORD",)  # `connector check` says so


def test_sealing_is_the_explicit_step_that_writes(tmp_path):
    path = write(tmp_path, {**BASE, "LDAP_BIND_PASSWORD": "s3cret-Pw", "CONSOLE_PASSWORD": "c0n"})
    notes = seal_config_file(path, environ={})
    assert [level for level, _ in notes] == [logging.INFO, logging.INFO]
    assert "LDAP_BIND_PASSWORD" in notes[0][1] and "CONSOLE_PASSWORD" in notes[1][1]
    on_disk = json.loads(path.read_text())
    assert "LDAP_BIND_PASSWORD" not in on_disk and "CONSOLE_PASSWORD" not in on_disk
    assert on_disk["LDAP_BIND_CREDENTIALS"].startswith("enc:v1:")
    assert on_disk["CONSOLE_CREDENTIALS"].startswith("enc:v1:")
    assert "s3cret-Pw" not in path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = tmp_path / "secret.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    # loads from the encrypted values, and the password never reaches repr()
    again = load_settings(path, environ={})
    assert again.ldap_bind_password == "s3cret-Pw" and again.console_password == "c0n"
    assert again.unsealed_keys == ()
    assert "s3cret-Pw" not in repr(again)
    # no temp files left behind by the atomic write; a second run has nothing to do
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "secret.key"]
    sealed = path.read_bytes()
    assert seal_config_file(path, environ={}) == []
    assert path.read_bytes() == sealed


def test_sealing_a_read_only_directory_says_so_and_changes_nothing(tmp_path):
    path = write(tmp_path, {**BASE, "LDAP_BIND_PASSWORD": "pw"})
    before = path.read_bytes()
    if os.geteuid() == 0:
        env = {"CONNECTOR_SECRET_KEY_FILE": str(tmp_path / "no-such-dir" / "secret.key")}
    else:
        os.chmod(tmp_path, 0o500)
        env = {}
    try:
        ((level, note),) = seal_config_file(path, environ=env)
    finally:
        os.chmod(tmp_path, 0o700)
    assert level == logging.WARNING
    assert "could not encrypt LDAP_BIND_PASSWORD" in note and "stays in plain text" in note
    assert path.read_bytes() == before
    assert load_settings(path, environ=env).ldap_bind_password == "pw"


def test_credentials_under_another_key_are_reported(tmp_path):
    other = SecretBox(tmp_path / "other.key").encrypt("pw")
    SecretBox(tmp_path / "secret.key").encrypt("gives this config its own, different key")
    path = write(tmp_path, {**BASE, "LDAP_BIND_CREDENTIALS": other})
    with pytest.raises(ConfigError, match="LDAP_BIND_CREDENTIALS: cannot be opened"):
        load_settings(path, environ={})


def test_missing_key_file_is_reported(tmp_path):
    sealed = SecretBox(tmp_path / "elsewhere.key").encrypt("pw")
    path = write(tmp_path, {**BASE, "LDAP_BIND_CREDENTIALS": sealed})
    with pytest.raises(ConfigError, match=r"key file .* is missing"):
        load_settings(path, environ={})


def test_read_only_config_dir_keeps_working(tmp_path):
    """A read-only directory: the settings load (loading writes nothing anyway)."""
    path = write(tmp_path, {**BASE, "LDAP_BIND_PASSWORD": "pw"})
    before = path.read_bytes()
    os.chmod(tmp_path, 0o500)
    try:
        s = load_settings(path, environ={})
    finally:
        os.chmod(tmp_path, 0o700)
    assert s.ldap_bind_password == "pw"
    assert path.read_bytes() == before


def test_settings_are_frozen(tmp_path):
    s = load_settings(write(tmp_path, {**BASE, "LDAP_BIND_PASSWORD": "pw"}), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.ldap_base = "x"  # type: ignore[misc]


def test_unknown_keys_are_reported_not_fatal(tmp_path, caplog):
    path = write(tmp_path, {**BASE, "LDAP_BIND_PASSWORD": "pw", "LDAP_BSAE": "typo"})
    s = load_settings(path, environ={})
    assert s.ignored_keys == ("LDAP_BSAE",)
    assert "LDAP_BSAE" in caplog.text


def test_directory_keys_optional_before_setup(tmp_path):
    s = load_settings(tmp_path / "absent.json", environ={}, require_directory=False)
    assert isinstance(s, Settings)
    assert len(s.directory_problems()) == 4


def test_every_key_is_described():
    keys = {d["key"] for d in describe()}
    assert {"LDAP_URL", "LDAP_USER_BY_NAME", "GROUPS_CACHE_SECONDS", "LDAP_CA_FILE"} <= keys
    assert all(d["help"] for d in describe())
