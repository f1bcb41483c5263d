"""connector.settings.schema: declarations, coercion and checks, with no file and no environment.

Every test here builds values in memory: the schema module reads and writes nothing (the last
test holds it to that).
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.secretbox import PREFIX
from connector.settings import schema
from connector.settings.schema import (
    KNOWN_KEYS,
    SEALED_KEYS,
    SECRET_KEYS,
    Settings,
    convert,
    declared,
    describe,
    overlay,
    refine,
    settle_signing_alg,
)

SHARED_SECRET = "a-shared-secret-for-hs256-of-enough-length-0123456789"


# ----------------------------------------------------------------------- declarations


def test_every_key_is_declared_once_with_a_description():
    keys = [key for _, key, _ in declared()]
    assert len(keys) == len(set(keys))
    assert all(field.metadata["help"].strip() for field, _, _ in declared())


def test_every_default_passes_its_own_check():
    failing = {
        key: field.metadata["check"](field.default)
        for field, key, _ in declared()
        if field.metadata.get("check") and field.metadata["check"](field.default)
    }
    assert failing == {}


def test_secret_fields_are_out_of_repr_and_listed_as_secret():
    hidden = {key for field, key, _ in declared() if not field.repr}
    assert hidden, "some fields are declared secret"
    assert hidden <= SECRET_KEYS
    assert set(SEALED_KEYS) | set(SEALED_KEYS.values()) <= SECRET_KEYS <= KNOWN_KEYS
    shown = repr(Settings(ldap_bind_password="pw-0f3c", https_proxy="http://u:pw-77a1@p:3128"))
    assert "pw-0f3c" not in shown and "pw-77a1" not in shown


def test_describe_lists_every_key_with_a_json_default():
    described = describe()
    assert [d["key"] for d in described] == [key for _, key, _ in declared()]
    json.dumps(described)  # tuples became lists
    by_key = {d["key"]: d for d in described}
    assert by_key["CLIENT_CERT_MAPPING"]["default"] == ["upn", "altsecid", "email"]
    assert by_key["LDAP_POOL_SIZE"]["default"] == 8


def test_a_sequence_default_must_be_a_tuple():
    with pytest.raises(TypeError, match="tuples"):
        schema._setting("X", [], "a list default would be shared by every instance")


# ----------------------------------------------------------------------- coercion


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        (" ON ", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        ("off", False),
        ("0", False),
        ("", False),
    ],
)
def test_booleans_from_json_and_from_the_environment(raw, expected):
    values, problems = convert({"LDAP_STARTTLS": raw})
    assert problems == []
    assert values["ldap_starttls"] is expected


@pytest.mark.parametrize(
    ("key", "raw", "field", "expected"),
    [
        ("LDAP_POOL_SIZE", "12", "ldap_pool_size", 12),
        ("LDAP_POOL_SIZE", 7, "ldap_pool_size", 7),
        ("LDAP_CONNECT_TIMEOUT", "2.5", "ldap_connect_timeout", 2.5),
        ("LDAP_CONNECT_TIMEOUT", 3, "ldap_connect_timeout", 3.0),
        ("LDAP_BASE", "dc=example,dc=test", "ldap_base", "dc=example,dc=test"),
        ("CONNECTION", 42, "connection", "42"),
        ("CONNECTION", "", "connection", None),
        ("LDAP_DOMAIN", None, "ldap_domain", None),
        ("KERBEROS_REALMS", '["A.TEST", " B.TEST "]', "kerberos_realms", ("A.TEST", "B.TEST")),
        (
            "KERBEROS_REALMS",
            "A.TEST, B.TEST  C.TEST",
            "kerberos_realms",
            ("A.TEST", "B.TEST", "C.TEST"),
        ),
        ("KERBEROS_REALMS", ["A.TEST", "", "B.TEST"], "kerberos_realms", ("A.TEST", "B.TEST")),
    ],
)
def test_values_take_their_declared_type(key, raw, field, expected):
    values, problems = convert({key: raw})
    assert problems == []
    assert values[field] == expected
    assert type(values[field]) is type(expected)


# ----------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("key", "raw", "says"),
    [
        ("LDAP_STARTTLS", "perhaps", "expected true or false"),
        ("LDAP_POOL_SIZE", "four", "expected a whole number"),
        ("LDAP_POOL_SIZE", True, "expected a whole number"),
        ("LDAP_POOL_SIZE", 2.5, "expected a whole number"),
        ("LDAP_CONNECT_TIMEOUT", "soon", "expected a number"),
        ("LDAP_CONNECT_TIMEOUT", False, "expected a number"),
        ("LDAP_BASE", ["dc=a"], "expected text"),
        ("KERBEROS_REALMS", "[not json", "expected a JSON list"),
        ("KERBEROS_REALMS", [1, 2], "expected a list of text values"),
        # of the right type, but refused by the key's check
        ("LDAP_POOL_SIZE", 0, "must be greater than 0"),
        ("LDAP_PAGE_SIZE", -1, "must not be negative"),
        ("LDAP_BIND_MECH", "NTLM", "must be one of simple, GSSAPI"),
        ("LDAP_URL", "http://dc1.example.test", "not an LDAP URL: http://dc1.example.test"),
        ("LDAP_USER_BY_NAME", "(uid=alice)", "must contain the placeholder {0}"),
        ("LDAP_USER_BY_NAME", "uid={0}", "must be an LDAP filter in parentheses"),
        ("LDAP_USER_BY_QUALIFIED_NAME", "(mail=x)", "must contain a placeholder"),
        ("CONSOLE_BIND", "0.0.0.0:4001", "the console listens on loopback only"),
        ("CONSOLE_BIND", "localhost", "must be host:port"),
        ("AD_HUB", "http://hub.example.test", "must be https://"),
        ("AD_HUB", "ftp://hub.example.test", "must be an https:// URL"),
        ("HUB_TRUSTED_ORIGINS", "https://hub.example.test/path", "must be an origin only"),
        ("HUB_ALLOWED_IP_RANGES", "10.0.0.0/8 not-a-range", "not a CIDR range: not-a-range"),
        ("TENANT_SIGNING_ALG", "none", "must be one of RS256, HS256"),
        ("CLIENT_CERT_MAPPING", "upn thumbprint", "a non-empty list of upn, altsecid"),
    ],
)
def test_a_bad_value_is_named_with_its_key(key, raw, says):
    values, problems = convert({key: raw})
    assert len(problems) == 1 and problems[0].startswith(f"{key}: ")
    assert says in problems[0]
    assert not values


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("CONSOLE_BIND", "off"),
        ("CONSOLE_BIND", "[::1]:4101"),
        ("AD_HUB", "http://127.0.0.1:8080/agent"),
        ("AD_HUB", "https://hub.example.test/agent"),
        ("HUB_TRUSTED_ORIGINS", "https://a.example.test https://b.example.test:8443"),
        ("LDAP_USER_BY_QUALIFIED_NAME", "(&(uid={1})(o={2}))"),
        ("TENANT_SIGNING_ALG", ""),
    ],
)
def test_good_values_pass_their_check(key, raw):
    values, problems = convert({key: raw})
    assert problems == []
    assert len(values) == 1


def test_every_problem_is_reported_at_once_in_declaration_order():
    values, problems = convert(
        {
            "LOG_LEVEL": "loud",
            "LDAP_POOL_SIZE": 0,
            "LDAP_URL": "dc1.example.test",
            "LDAP_BASE": "dc=example,dc=test",
            "SOMETHING_ELSE": "ignored by convert",
        }
    )
    assert [p.split(":", 1)[0] for p in problems] == ["LDAP_URL", "LDAP_POOL_SIZE", "LOG_LEVEL"]
    assert values == {"ldap_base": "dc=example,dc=test"}


def test_ldap_urls_adds_to_ldap_url_without_repeats():
    values, problems = convert(
        {
            "LDAP_URL": "ldap://dc1.example.test ldap://dc2.example.test",
            "LDAP_URLS": ["ldaps://dc3.example.test", "ldap://dc1.example.test"],
        }
    )
    assert problems == []
    assert values["ldap_urls"] == (
        "ldap://dc1.example.test",
        "ldap://dc2.example.test",
        "ldaps://dc3.example.test",
    )
    _, problems = convert({"LDAP_URLS": ["dc4.example.test"]})
    assert problems == ["LDAP_URLS: not an LDAP URL: dc4.example.test"]


# ----------------------------------------------------------------------- the pure steps of loading


def test_overlay_puts_known_environment_keys_over_the_file():
    data = {"LDAP_BASE": "dc=file", "PORT": 4000, "NOT_A_KEY": "kept"}
    env = {"LDAP_BASE": "dc=env", "LDAP_BIND_CREDENTIALS": "sealed", "HOME": "/root"}
    merged = overlay(data, env)
    assert merged == {
        "LDAP_BASE": "dc=env",
        "PORT": 4000,
        "NOT_A_KEY": "kept",
        "LDAP_BIND_CREDENTIALS": "sealed",
    }
    assert data["LDAP_BASE"] == "dc=file"  # the file's values are not changed


def test_the_signing_algorithm_follows_the_key():
    values = {"tenant_signing_key": SHARED_SECRET}
    assert settle_signing_alg(values) is None
    assert values["tenant_signing_alg"] == "HS256"

    values = {"tenant_signing_key": SHARED_SECRET, "tenant_signing_alg": "RS256"}
    problem = settle_signing_alg(values)
    assert problem is not None and problem.startswith("TENANT_SIGNING_KEY: ")
    assert "shared secret (HS256)" in problem
    assert SHARED_SECRET not in problem

    values = {"tenant_signing_key": "too-short"}
    assert "at least" in (settle_signing_alg(values) or "")


def test_a_key_still_sealed_or_absent_is_left_alone():
    sealed = {"tenant_signing_key": PREFIX + "opaque"}
    assert settle_signing_alg(sealed) is None
    assert "tenant_signing_alg" not in sealed
    empty: dict[str, object] = {}
    assert settle_signing_alg(empty) is None
    assert empty == {}


def test_conflicts_between_keys():
    assert Settings().conflicts() == []
    same_port = Settings(port=4400, console_bind="127.0.0.1:4400")
    assert same_port.conflicts() == [
        "CONSOLE_BIND: port 4400 is the sign-in endpoint's; use another"
    ]
    assert Settings(bind="127.0.0.1:5000", console_bind="127.0.0.1:5000").conflicts()
    assert Settings(client_cert_auth=True).conflicts() == [
        "CLIENT_CERT_CA_FILE: required with CLIENT_CERT_AUTH"
    ]
    assert Settings(client_cert_auth=True, client_cert_ca_file="/ca.pem").conflicts() == []


def test_directory_problems_name_what_is_missing():
    assert [p.split(":")[0] for p in Settings().directory_problems()] == [
        "LDAP_URL",
        "LDAP_BASE",
        "LDAP_BIND_USER",
        "LDAP_BIND_PASSWORD / LDAP_BIND_CREDENTIALS",
    ]
    gss = Settings(ldap_domain="example.test", ldap_base="dc=x", ldap_bind_mech="GSSAPI")
    assert gss.directory_problems() == ["LDAP_BIND_KEYTAB: required with LDAP_BIND_MECH=GSSAPI"]
    ready = Settings(
        ldap_urls=("ldap://dc1",), ldap_base="dc=x", ldap_bind_user="svc", ldap_bind_password="p"
    )
    assert ready.directory_problems() == []
    ready.require_directory()
    with pytest.raises(ConfigError) as caught:
        dataclasses.replace(ready, ldap_base="").require_directory()
    assert "LDAP_BASE" in str(caught.value)


# ----------------------------------------------------------------------- derived values


def test_listening_addresses():
    assert Settings().main_bind == "127.0.0.1:4000"
    assert Settings(ssl_pfx="cert.pfx").main_bind == "0.0.0.0:4000"
    assert Settings(bind="[::1]:8443").main_bind == "[::1]:8443"
    assert Settings().console_address == ("127.0.0.1", 4001)
    assert Settings(bind="0.0.0.0:9000").console_address == ("127.0.0.1", 9001)
    assert Settings(console_bind="[::1]:4500").console_address == ("::1", 4500)
    assert Settings(console_bind="off").console_address is None


def test_places_beside_config_json():
    s = Settings(config_path="/etc/connector/config.json")
    assert s.state_dir == Path("/etc/connector")
    assert s.run_dir == Path("/etc/connector/run")
    assert Settings(config_path="/etc/c/config.json", run_dir_setting="/run/c").run_dir == Path(
        "/run/c"
    )
    assert s.secret_box.key_file == Path("/etc/connector/secret.key")
    assert Settings(secret_key_file="/k/secret.key").secret_box.key_file == Path("/k/secret.key")


def test_groups_base_falls_back_to_the_user_base():
    assert Settings(ldap_base="dc=x").groups_base == "dc=x"
    assert Settings(ldap_base="dc=x", ldap_base_groups="ou=g,dc=x").groups_base == "ou=g,dc=x"


def test_hub_configured_needs_all_four():
    full = Settings(ad_hub="https://h", connection="c", realm="r", tenant_signing_key="k")
    assert full.hub_configured
    assert not dataclasses.replace(full, realm=None).hub_configured


# ----------------------------------------------------------------------- refine


def test_refine_makes_a_changed_copy():
    before = Settings(ldap_urls=("ldap://dc1",), ldap_pool_size=4)
    after = refine(before, {"LDAP_URLS": ["ldap://dc2"], "LDAP_POOL_SIZE": "9"})
    assert after.ldap_urls == ("ldap://dc2",)  # the list is replaced as a whole
    assert after.ldap_pool_size == 9
    assert before.ldap_urls == ("ldap://dc1",) and before.ldap_pool_size == 4


def test_refine_refuses_every_bad_value_at_once():
    with pytest.raises(ConfigError) as caught:
        refine(Settings(), {"LDAP_POOL_SIZE": 0, "LOG_FORMAT": "xml"})
    text = str(caught.value)
    assert "LDAP_POOL_SIZE" in text and "LOG_FORMAT" in text
    assert "the values entered" in text


# ----------------------------------------------------------------------- no I/O


# os is the way to the environment too (os.environ, os.getenv).
_IO_MODULES = {"os", "tempfile", "shutil", "subprocess", "socket", "io", "sqlite3"}
_IO_NAMES = {
    "open",
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "mkdir",
    "unlink",
    "passphrase",  # SecretBox: reads or creates the key file
    "encrypt",
    "decrypt",
}


def test_the_schema_module_reads_and_writes_nothing():
    tree = ast.parse(Path(schema.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | {
        node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
    }
    assert imported & _IO_MODULES == set()
    assert used & _IO_NAMES == set()
