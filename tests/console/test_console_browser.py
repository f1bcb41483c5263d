"""The console in headless Chromium: first run from nothing, and cloning by export / import.

Each test drives real pages of a connector under gunicorn (deploy/gunicorn.conf.py) whose
console has its own loopback port; the devhub is the hub and OpenLDAP the directory. Saving
settings restarts the workers (SIGHUP to gunicorn's master): the tests wait for the new ones.
At the end, the logs of the whole run (gunicorn's output and the console's log ring) are
searched for every secret that was typed or stored: none may appear.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from configs import openldap_config
from connector_proc import setup_config
from consolekit import FAST

WRONG_BIND = "Wrong-Bind-Secret-9"
PASSPHRASE = "Clone-Passphrase-2024!"
MAPPER = (
    "def map_profile(raw, default):\n"
    "    profile = default(raw)\n"
    "    profile['clonedBy'] = 'console-test'\n"
    "    return profile\n"
)


def fill(browser, element_id, text):
    from selenium.webdriver.common.by import By

    field = browser.driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def click(browser, element_id):
    from selenium.webdriver.common.by import By

    browser.driver.find_element(By.ID, element_id).click()


def text_of(browser, css):
    return browser.wait_for(css).text


def sign_in(browser, proc):
    """Sign in to ``proc``'s console with its password (made before it started)."""
    browser.get(proc.console + "/login")
    fill(browser, "password", proc.password)
    click(browser, "sign-in")
    browser.wait_for("#sign-out")


def no_secrets(texts, secrets):
    for secret in secrets:
        for name, text in texts.items():
            assert secret not in text, f"{secret[:6]}… found in {name}"


def secret_lines(state: Path) -> list[str]:
    """The secret key and the body of the agent's (encrypted) private key."""
    key = (state / "secret.key").read_text().strip()
    body = [
        line
        for line in (state / "agent.key").read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    return [key, *body[:3]]


def test_first_run_from_the_console_alone(tmp_path, hub, slapd, browser, console_connector):
    state = tmp_path / "first"
    proc = console_connector(state, env={k: str(v) for k, v in FAST.items()})
    assert not (state / "config.json").exists()

    # nothing without the console password: the sign-in says how to get one
    browser.get(proc.console + "/")
    assert "console-password" in text_of(browser, "#password-help")
    fill(browser, "password", proc.password + "-wrong")
    click(browser, "sign-in")
    assert text_of(browser, "#login-error") == "Wrong password."
    fill(browser, "password", proc.password)
    click(browser, "sign-in")
    browser.wait_for("#sign-out")  # signed in (a get now could cut the form's post short)

    # status says what is missing and where to go
    browser.get(proc.console + "/")
    assert "not set up yet" in text_of(browser, "#setup-needed")
    browser.get(proc.console + "/setup")

    # 1. the ticket: a wrong one is refused, the right one sets the hub up
    fill(browser, "ticket-url", hub.ticket_url + "-wrong")
    click(browser, "run-setup")
    assert "Setup failed (ticket)" in text_of(browser, "#ticket-error")
    fill(browser, "ticket-url", hub.ticket_url)
    click(browser, "run-setup")
    assert "Connected to the hub" in text_of(browser, "#ticket-ok")
    stored = json.loads((state / "config.json").read_text())
    assert stored["CONNECTION"] == "corp" and stored["PROVISIONING_TICKET"] == hub.ticket_url
    proc.wait_status(lambda s: s["hub"]["configured"])

    # 2. the directory: a wrong bind password is refused, naming the failing step
    browser.get(proc.console + "/setup")
    fill(browser, "urls", slapd.uri)
    fill(browser, "base", slapd.base)
    fill(browser, "bind-user", slapd.bind_dn)
    fill(browser, "bind-password", WRONG_BIND)
    click(browser, "starttls")
    fill(browser, "ca-pem", Path(slapd.ca_file).read_text())
    fill(browser, "user-filter", "(uid={0})")
    fill(browser, "sample-user", "dave")
    click(browser, "test-and-save")
    assert text_of(browser, "#failed-step-name") == "bind"
    assert "check LDAP_BIND_USER and its password" in text_of(browser, "#failed-hint")
    steps = browser.texts("#steps tr")
    assert any(row.startswith("tls") and "PASS" in row for row in steps), steps
    stored = json.loads((state / "config.json").read_text())
    assert not any(k.startswith("LDAP_") for k in stored), "nothing may be saved"
    assert not list(state.glob("*ca*.pem")), "the pasted CA is not kept either"

    # the form kept what was typed (but not the password); the right password saves it all
    fill(browser, "bind-password", slapd.bind_pw)
    fill(browser, "ca-pem", Path(slapd.ca_file).read_text())
    click(browser, "test-and-save")
    assert "Every step passed" in text_of(browser, "#directory-saved")
    preview = json.loads(text_of(browser, "#preview"))
    assert preview["id"] == "dave" and "team-core" in preview["groups"]
    assert "restarting" in text_of(browser, "#reload-note")
    stored = json.loads((state / "config.json").read_text())
    assert stored["LDAP_URL"] == slapd.uri and stored["LDAP_STARTTLS"] is True
    assert stored["LDAP_BIND_CREDENTIALS"].startswith("enc:v1:")
    assert "LDAP_BIND_PASSWORD" not in stored
    assert stored["LDAP_CA_FILE"] == str(state / "ldap-ca.pem")

    # the workers restart with the new settings and connect; the status page says so
    status = proc.wait_status(
        lambda s: s["hub"]["connected"] and not s["directory_problems"] and s["ldap"]
    )
    assert status["ldap"][slapd.uri]["up"]
    # the page aggregates the workers' status files, written every 2 s: it may lag the reload
    deadline = time.monotonic() + 30
    while True:
        browser.get(proc.console + "/")
        hub_state, ldap_state = text_of(browser, "#hub-state"), text_of(browser, "#ldap")
        if hub_state.startswith("Connected") and "up" in ldap_state:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    assert hub_state.startswith("Connected"), hub_state
    assert "up" in ldap_state, ldap_state

    # a login through the hub works
    done = hub.wait_done(
        hub.queue("authenticate_user", {"pid": "fr-1", "username": "dave", "password": "davepw"})
    )
    assert done["result"]["profile"]["id"] == "dave"

    # try a login on the console: the exact profile, or the precise error
    browser.get(proc.console + "/users")
    fill(browser, "try-username", "carol")
    fill(browser, "try-password", "Carol-Typo-77")
    click(browser, "try")
    assert text_of(browser, "#try-error").startswith("WrongPassword")
    fill(browser, "try-password", "carolpw")
    click(browser, "try")
    assert "team-dev" in json.loads(text_of(browser, "#try-profile"))["groups"]

    # the troubleshooter: everything passes, including the hub and gunicorn's limits
    browser.get(proc.console + "/check?run=1&user=dave")
    assert text_of(browser, "#summary").endswith("0 failed")
    rows = browser.texts("#checks tr")
    for name in ("bind", "user", "hub-reach", "hub-auth", "clock", "header-limits"):
        assert any(r.startswith(name + " ") and "PASS" in r for r in rows), (name, rows)

    # the logs: every worker's lines, filtered by user
    browser.get(proc.console + "/logs?user=carol&level=info")
    lines = browser.texts("#lines tr.line")
    assert any("login method=console user='carol' outcome=WrongPassword" in ln for ln in lines)
    assert not any("dave" in ln for ln in lines)

    no_secrets(
        {"gunicorn output": proc.log(), "log ring": proc.run_files_text()},
        [
            WRONG_BIND,
            slapd.bind_pw,
            "davepw",
            "Carol-Typo-77",
            "carolpw",
            hub.ticket,
            proc.password,
            *secret_lines(state),
        ],
    )


def wait_download(folder: Path, timeout: float = 20.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no download in {folder}")


def test_export_then_import_clones_an_instance_that_serves_logins(
    tmp_path, hub, slapd, browser, console_connector
):
    # instance A, set up with the CLI, with a profile mapper
    a_state = tmp_path / "a"
    a_state.mkdir()
    (a_state / "mapper.py").write_text(MAPPER)
    setup_config(
        a_state,
        openldap_config(slapd),
        hub.ticket_url,
        **FAST,
        PROFILE_MAPPER=str(a_state / "mapper.py"),
    )
    a = console_connector(a_state)
    a.wait_status(lambda s: s["hub"]["connected"])

    # export from A's console
    for old in browser.downloads.iterdir():
        old.unlink()
    sign_in(browser, a)
    browser.get(a.console + "/archive")
    fill(browser, "export-passphrase", PASSPHRASE)
    fill(browser, "export-passphrase2", PASSPHRASE + "x")
    click(browser, "export-button")
    assert "differ" in text_of(browser, "#export-error")
    fill(browser, "export-passphrase", PASSPHRASE)
    fill(browser, "export-passphrase2", PASSPHRASE)
    click(browser, "export-button")
    exported = wait_download(browser.downloads)
    assert exported.read_bytes().startswith(b"CONNECTOR-EXPORT-1\n")

    # B starts empty; a wrong passphrase is refused; a dry run writes nothing
    b_state = tmp_path / "b"
    b = console_connector(b_state)
    sign_in(browser, b)
    browser.get(b.console + "/archive")
    browser.wait_for("#archive-file").send_keys(str(exported))
    fill(browser, "import-passphrase", "not-the-passphrase")
    click(browser, "import-button")
    assert "wrong passphrase" in text_of(browser, "#import-error")
    browser.wait_for("#archive-file").send_keys(str(exported))
    fill(browser, "import-passphrase", PASSPHRASE)
    click(browser, "dry-run")
    click(browser, "import-button")
    report = text_of(browser, "#report-lines")
    assert "+ LDAP_BIND_CREDENTIALS = (secret)" in report and "agent certificate" in report
    assert not (b_state / "config.json").exists()

    # the real import; B's workers restart and connect as the clone of A
    browser.get(b.console + "/archive")
    browser.wait_for("#archive-file").send_keys(str(exported))
    fill(browser, "import-passphrase", PASSPHRASE)
    click(browser, "import-button")
    assert text_of(browser, "#report h2") == "Imported"
    assert "restarting" in text_of(browser, "#reload-note")
    b.wait_status(lambda s: s["hub"]["connected"] and not s["directory_problems"])
    assert (b_state / "agent.crt").read_bytes() == (a_state / "agent.crt").read_bytes()
    assert (b_state / "secret.key").read_bytes() == (a_state / "secret.key").read_bytes()
    stored = json.loads((b_state / "config.json").read_text())
    assert stored["PROFILE_MAPPER"] == str(b_state / "profile_mapper.py")

    # B kept its own console password; A's secret key, now B's, ends the sessions signed with
    # B's old one: B's mapper page shows the carried mapper at work once signed in again (and
    # once the browser's kept-alive connection no longer reaches a worker that is still
    # finishing with the old settings)
    assert (b_state / "console-password").exists()
    carried = str(b_state / "profile_mapper.py")
    deadline = time.monotonic() + 20
    while True:
        browser.get(b.console + "/mapper?user=alice")
        if "/console/login" in browser.driver.current_url:
            sign_in(browser, b)
            continue
        if carried in text_of(browser, "#mapper-active") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert carried in text_of(browser, "#mapper-active")
    assert json.loads(text_of(browser, "#mapped"))["clonedBy"] == "console-test"

    # with A gone, B alone answers the hub's logins
    a.stop()
    login = {"pid": "clone-1", "username": "alice", "password": "alicepw"}
    done = hub.wait_done(hub.queue("authenticate_user", login), timeout=30)
    assert done["result"]["profile"]["id"] == "alice"
    assert done["result"]["profile"]["clonedBy"] == "console-test"
    served = b.status()
    assert served["commands"].get("success", 0) >= 1

    no_secrets(
        {
            "A's output": a.log(),
            "B's output": b.log(),
            "A's log ring": a.run_files_text(),
            "B's log ring": b.run_files_text(),
        },
        [
            PASSPHRASE,
            slapd.bind_pw,
            "alicepw",
            hub.ticket,
            a.password,
            b.password,
            *secret_lines(a_state),
        ],
    )


@pytest.fixture(autouse=True)
def _fresh_browser_page(browser):
    yield
    browser.driver.delete_all_cookies()
