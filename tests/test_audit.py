"""The audit line: one shape for every way in, the same fields for JSON logs, no secrets."""

import io
import json
import logging

import pytest

from connector import audit
from connector.logs import JsonFormatter


@pytest.fixture
def lines():
    """What the ``connector.audit`` logger writes, as text and as JSON."""
    text, js = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(text), logging.StreamHandler(js)]
    handlers[1].setFormatter(JsonFormatter())
    logger = logging.getLogger("connector.audit")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    for h in handlers:
        logger.addHandler(h)
    try:
        yield lambda: (
            text.getvalue().splitlines(),
            [json.loads(x) for x in js.getvalue().splitlines()],
        )
    finally:
        for h in handlers:
            logger.removeHandler(h)
        logger.setLevel(old_level)


def test_the_module_logs_on_the_audit_logger():
    assert audit.log.name == "connector.audit"


def test_a_sign_in_names_the_client(lines):
    audit.record("login", "form", "alice", "success", "c-1", client="192.0.2.7")
    (text,), (obj,) = lines()
    assert text == "login method=form user='alice' outcome=success client=192.0.2.7 correlation=c-1"
    assert obj["method"] == "form" and obj["user"] == "alice" and obj["outcome"] == "success"
    assert obj["client"] == "192.0.2.7" and obj["correlation_id"] == "c-1"
    assert "principal" not in obj


def test_a_hub_command_has_no_client(lines):
    audit.record("password_change", "hub:self", "bob", "WrongPassword", "p-1")
    (text,), (obj,) = lines()
    assert (
        text == "password_change method=hub:self user='bob' outcome=WrongPassword correlation=p-1"
    )
    assert "client" not in obj and obj["correlation_id"] == "p-1"


def test_a_ticket_names_its_principal(lines):
    audit.record("login", "kerberos", "carol", "success", "c-2", client="::1", principal="carol@EX")
    (text,), (obj,) = lines()
    assert text.endswith(" correlation=c-2 principal='carol@EX'")
    assert obj["principal"] == "carol@EX"


def test_odd_values_cannot_forge_fields(lines):
    # a user name is repr()'d: quotes and a newline cannot start a second line or field
    audit.record(
        "login",
        "form",
        "x' outcome=success\nlogin user='root",
        "WrongPassword",
        "c-3",
        client="::1",
    )
    (text,), _ = lines()
    assert text.count("outcome=") == 2 and text.endswith(
        "outcome=WrongPassword client=::1 correlation=c-3"
    )
    assert "\n" not in text and "\\n" in text


def test_a_client_object_is_written_as_text(lines):
    import ipaddress

    audit.record(
        "login", "form", None, "throttled", "c-4", client=ipaddress.ip_address("192.0.2.9")
    )
    (text,), (obj,) = lines()
    assert "user=None" in text and "client=192.0.2.9" in text and obj["client"] == "192.0.2.9"


def test_the_record_names_its_source_as_logger_info_would(caplog):
    with caplog.at_level(logging.INFO, logger="connector.audit"):
        audit.record("login", "hub", "dave", "success", "p-9", command="c-9", ms=2.25)
    (rec,) = [r for r in caplog.records if r.name == "connector.audit"]
    assert rec.funcName == "record" and rec.pathname == audit.record.__code__.co_filename
    assert rec.module == "audit" and rec.levelno == logging.INFO
    assert rec.getMessage() == (
        "login method=hub user='dave' outcome=success correlation=p-9 command=c-9 ms=2.2"
    )
    assert rec.command_id == "c-9" and rec.ms == 2.25


def test_nothing_is_made_when_the_audit_logger_is_off(caplog):
    with caplog.at_level(logging.WARNING, logger="connector.audit"):
        audit.record("login", "form", "erin", "success", "c-1", client="::1")
    assert not [r for r in caplog.records if r.name == "connector.audit"]
