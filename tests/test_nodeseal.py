"""A Node connector's config.json with its sealed LDAP_BIND_CREDENTIALS loads: opened with
certs/cert.key beside it (or AUTH_CERT_KEY) in either Node format, resealed in ours; a wrong
or missing key is a clear configuration error."""

import json
import logging

import pytest
from nodeformat import IV, SALT, evp_md5, openssl_evp, seal_v1, seal_v2

from connector import nodeseal
from connector.errors import ConfigError
from connector.secretbox import PREFIX, SecretError
from connector.settings import load_settings, seal_config_file

BASE = {
    "LDAP_URL": "ldap://127.0.0.1:389",
    "LDAP_BASE": "dc=example,dc=test",
    "LDAP_BIND_USER": "cn=svc,dc=example,dc=test",
}
PASSWORD = "Sérvice-Pw 42!"
#: Stand-ins for the Node connector's certs/cert.key: only their bytes matter here.
NODE_KEY = (
    b"-----BEGIN RSA PRIVATE KEY-----\n"
    b"MIIEowIBAAKCAQEA0node+key+one\n"
    b"-----END RSA PRIVATE KEY-----\n"
)
OTHER_KEY = NODE_KEY.replace(b"one", b"two")
SEALERS = {"v2": seal_v2, "v1": seal_v1}


def node_dir(tmp_path, sealed, key=NODE_KEY, **extra):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "cert.key").write_bytes(key)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, "LDAP_BIND_CREDENTIALS": sealed, **extra}))
    return path


@pytest.mark.parametrize("version", SEALERS)
def test_node_sealed_password_loads_and_is_resealed(tmp_path, version):
    sealed = SEALERS[version](PASSWORD, NODE_KEY)
    assert sealed.startswith("$2$.") == (version == "v2")
    path = node_dir(tmp_path, sealed)
    before = path.read_bytes()
    assert load_settings(path, environ={}).ldap_bind_password == PASSWORD
    assert path.read_bytes() == before  # loading opens it and writes nothing
    ((level, note),) = seal_config_file(path, environ={})  # the explicit step reseals it
    assert level == logging.INFO and "resealed" in note
    stored = json.loads(path.read_text())["LDAP_BIND_CREDENTIALS"]
    assert stored.startswith(PREFIX) and sealed not in path.read_text()
    # from now on ours alone opens it: the Node key is no longer needed
    (tmp_path / "certs" / "cert.key").unlink()
    assert load_settings(path, environ={}).ldap_bind_password == PASSWORD


@pytest.mark.parametrize("version", SEALERS)
def test_auth_cert_key_in_the_config_or_the_environment(tmp_path, version):
    key_text = NODE_KEY.decode()
    sealed = SEALERS[version](PASSWORD, NODE_KEY)
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({**BASE, "LDAP_BIND_CREDENTIALS": sealed, "AUTH_CERT_KEY": key_text})
    )
    settings = load_settings(path, environ={}, encrypt_in_place=False)
    assert settings.ldap_bind_password == PASSWORD
    assert json.loads(path.read_text())["LDAP_BIND_CREDENTIALS"] == sealed  # nothing written
    path.write_text(json.dumps({**BASE, "LDAP_BIND_CREDENTIALS": sealed}))
    env = {"AUTH_CERT_KEY": key_text}
    assert load_settings(path, environ=env, encrypt_in_place=False).ldap_bind_password == PASSWORD


@pytest.mark.parametrize("version", SEALERS)
def test_wrong_key_is_a_clear_error_and_nothing_changes(tmp_path, version):
    sealed = SEALERS[version](PASSWORD, NODE_KEY)
    path = node_dir(tmp_path, sealed, key=OTHER_KEY)
    before = path.read_text()
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    (problem,) = [p for p in caught.value.problems if p.startswith("LDAP_BIND_CREDENTIALS:")]
    assert problem.startswith(
        "LDAP_BIND_CREDENTIALS: sealed by the Node connector, but its key does not open it"
    ), problem
    assert PASSWORD not in str(caught.value)
    assert path.read_text() == before and not (tmp_path / "secret.key").exists()


def test_missing_key_file_says_where_to_put_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, "LDAP_BIND_CREDENTIALS": seal_v2(PASSWORD, NODE_KEY)}))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    (problem,) = [p for p in caught.value.problems if p.startswith("LDAP_BIND_CREDENTIALS:")]
    assert "whose key is missing" in problem and str(tmp_path / "certs" / "cert.key") in problem


@pytest.mark.parametrize(
    "value",
    ["$2$.zz.00.00", "$2$.00.00", "$2$." + SALT.hex() + "." + IV.hex() + ".abc", "0" * 31],
    ids=["not-hex", "three-parts", "odd-length", "short-v1"],
)
def test_damaged_values_are_refused(value):
    with pytest.raises(SecretError):
        nodeseal.unseal(value, NODE_KEY)


def test_key_derivations_match_the_published_ones():
    # v1: OpenSSL's own EVP_BytesToKey (the openssl command) and ours agree
    assert nodeseal.evp_bytes_to_key(b"node-key-text") == openssl_evp("node-key-text")
    assert nodeseal.evp_bytes_to_key(NODE_KEY) == evp_md5(NODE_KEY)
    # v2 values made with cryptography's scrypt open with the module's (hashlib's)
    assert nodeseal.unseal(seal_v2("x", NODE_KEY, SALT, bytes(16)), NODE_KEY) == "x"


def test_what_counts_as_node_sealed():
    assert nodeseal.is_node_sealed(seal_v2(PASSWORD, NODE_KEY))
    assert nodeseal.is_node_sealed(seal_v1(PASSWORD, NODE_KEY))
    for other in ("", "plain password", "enc:v1:abc", "0" * 30, "g" * 32):
        assert not nodeseal.is_node_sealed(other), other
