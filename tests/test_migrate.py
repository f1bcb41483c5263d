"""``connector migrate NODE_DIR``: a Node connector's installation (config.json with its sealed
password, certs/cert.pem and cert.key, a JavaScript profile mapper) brought over, then used
against the test OpenLDAP."""

import json
import subprocess
import sys

import pytest
from configs import openldap_config
from cryptography.hazmat.primitives import serialization
from nodeformat import seal_v1, seal_v2

from connector.channel.identity import AgentIdentity
from connector.secretbox import PREFIX, SecretBox
from connector.settings import load_settings

MAPPER_JS = """module.exports = function (raw_data) {
  var profile = { id: raw_data.uid, displayName: raw_data.displayName };
  profile['department'] = raw_data['departmentNumber'];
  profile.employeeType = raw_data.employeeType;
  if (profile.department == 'x') { profile['flag'] = true; }
  return profile;
};
"""
NODE_ONLY = {
    "SESSION_SECRET": "s3ss10n",
    "WSFED_ISSUER": "urn:auth0:acme",
    "LDAP_HEARTBEAT_SECONDS": 60,
}


def cli(config, *args):
    return subprocess.run(
        [sys.executable, "-m", "connector.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_node_dir(path, slapd, seal=seal_v2, mapper=True):
    """A Node connector's directory: its certificate and key, config.json, a mapper."""
    identity = AgentIdentity.generate("node-connector", alg="RS256")  # Node makes RSA keys
    key_pem = identity.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (path / "certs").mkdir(parents=True)
    (path / "certs" / "cert.key").write_bytes(key_pem)
    (path / "certs" / "cert.pem").write_bytes(
        identity.cert.public_bytes(serialization.Encoding.PEM)
    )
    config = openldap_config(slapd)
    password = config.pop("LDAP_BIND_PASSWORD")
    config["LDAP_BIND_CREDENTIALS"] = seal(password, key_pem)
    config.update(NODE_ONLY, CONNECTION="corp-ad", REALM="urn:acme", NODE_ONLY_UNKNOWN="x")
    (path / "config.json").write_text(json.dumps(config))
    if mapper:
        (path / "profileMapper.js").write_text(MAPPER_JS)
    return identity


@pytest.mark.parametrize("seal", [seal_v2, seal_v1], ids=["v2", "v1"])
def test_migrate_brings_config_certificate_and_key_over(tmp_path, slapd, seal):
    node = tmp_path / "node"
    identity = make_node_dir(node, slapd, seal)
    target = tmp_path / "new" / "config.json"
    target.parent.mkdir()
    out = cli(target, "migrate", str(node))
    assert out.returncode == 0, out.stdout + out.stderr
    config = json.loads(target.read_text())
    # the password: opened with certs/cert.key, sealed again under our secret.key
    assert config["LDAP_BIND_CREDENTIALS"].startswith(PREFIX)
    assert slapd.bind_pw not in target.read_text() and slapd.bind_pw not in out.stdout
    version = "v2" if seal is seal_v2 else "v1"
    assert f"opened with {node / 'certs' / 'cert.key'} (Node format {version})" in out.stdout
    # the certificate the hub knows, and its key (encrypted now)
    assert config["AGENT_CERT_THUMBPRINT"] == identity.kid
    box = SecretBox(target.parent / "secret.key")
    assert AgentIdentity.load(target.parent, box).kid == identity.kid
    assert b"ENCRYPTED" in (target.parent / "agent.key").read_bytes()
    # what stays behind is said
    assert "left out, the Node connector's and not used here: " in out.stdout
    for key in NODE_ONLY:
        assert key not in config and key in out.stdout
    assert "NODE_ONLY_UNKNOWN" not in config and "unknown here: NODE_ONLY_UNKNOWN" in out.stdout
    todo = [line for line in out.stdout.splitlines() if line.startswith("TO DO profile mapper")]
    assert len(todo) == 1 and "PROFILE_MAPPER" in todo[0], out.stdout
    assert "The fields it sets: department, employeeType, flag." in todo[0]
    # and the result works against the directory
    assert load_settings(target, environ={}).ldap_bind_password == slapd.bind_pw
    user = cli(target, "user", "alice")
    assert user.returncode == 0, user.stderr
    assert json.loads(user.stdout)["id"] == "alice"


def test_dry_run_writes_nothing_and_an_existing_config_needs_force(tmp_path, slapd):
    node = tmp_path / "node"
    make_node_dir(node, slapd, mapper=False)
    target = tmp_path / "new" / "config.json"
    target.parent.mkdir()
    dry = cli(target, "migrate", str(node), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing written" in dry.stdout and "TO DO" not in dry.stdout
    assert list(target.parent.iterdir()) == []
    target.write_text("{}")
    refused = cli(target, "migrate", str(node))
    assert refused.returncode == 2 and "give --force" in refused.stderr
    assert target.read_text() == "{}"
    assert cli(target, "migrate", str(node), "--force").returncode == 0
    assert json.loads(target.read_text())["CONNECTION"] == "corp-ad"


def test_wrong_key_stops_the_migration_before_anything_is_written(tmp_path, slapd):
    node = tmp_path / "node"
    make_node_dir(node, slapd)
    config = json.loads((node / "config.json").read_text())
    config["LDAP_BIND_CREDENTIALS"] = seal_v2("whatever", b"another key entirely")
    (node / "config.json").write_text(json.dumps(config))
    target = tmp_path / "new" / "config.json"
    target.parent.mkdir()
    out = cli(target, "migrate", str(node))
    assert out.returncode == 2
    assert "but its key does not open it" in out.stderr, out.stderr
    assert list(target.parent.iterdir()) == []


def test_not_a_node_directory(tmp_path):
    out = cli(tmp_path / "new.json", "migrate", str(tmp_path / "nothing-here"))
    assert out.returncode == 2 and "no config.json there" in out.stderr


def _pems(identity):
    key = identity.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return identity.cert.public_bytes(serialization.Encoding.PEM).decode(), key.decode()


def test_certificate_and_key_from_auth_cert_settings(tmp_path, slapd):
    """AUTH_CERT / AUTH_CERT_KEY in the config, no certs/ directory: the key seals the
    password (v1 here) and, with the certificate, becomes the agent's."""
    identity = AgentIdentity.generate("node-in-config", alg="RS256")
    cert_pem, key_pem = _pems(identity)
    config = openldap_config(slapd)
    password = config.pop("LDAP_BIND_PASSWORD")
    config.update(
        LDAP_BIND_CREDENTIALS=seal_v1(password, key_pem.encode()),
        AUTH_CERT=cert_pem,
        AUTH_CERT_KEY=key_pem,
    )
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "config.json").write_text(json.dumps(config))
    target = tmp_path / "new" / "config.json"
    target.parent.mkdir()
    out = cli(target, "migrate", str(tmp_path / "node"))
    assert out.returncode == 0, out.stderr
    assert "opened with AUTH_CERT_KEY (Node format v1)" in out.stdout
    migrated = json.loads(target.read_text())
    assert "AUTH_CERT_KEY" not in migrated and "AUTH_CERT" not in migrated
    assert "PRIVATE KEY" not in target.read_text()
    assert migrated["AGENT_CERT_THUMBPRINT"] == identity.kid
    assert load_settings(target, environ={}).ldap_bind_password == password


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path, slapd):
    node = tmp_path / "node"
    make_node_dir(node, slapd, mapper=False)
    other_cert, _ = _pems(AgentIdentity.generate("someone-else", alg="RS256"))
    (node / "certs" / "cert.pem").write_text(other_cert)
    target = tmp_path / "new" / "config.json"
    target.parent.mkdir()
    out = cli(target, "migrate", str(node))
    assert out.returncode == 2 and "the key is not the certificate's" in out.stderr, out.stderr
    assert list(target.parent.iterdir()) == []
