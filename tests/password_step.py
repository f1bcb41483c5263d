"""The sign-in form and its password change step, walked with requests or Chromium
(``kerberos_clients.Chromium``), for the e2e and hostile suites."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from connector_proc import ConnectorProcess, setup_config
from hubs import DevHubProcess, start_devhub


@contextlib.contextmanager
def connector_with_hub(
    tmp: Path, directory_cfg: dict[str, Any], **extra: Any
) -> Iterator[tuple[DevHubProcess, ConnectorProcess]]:
    """A devhub and a connector behind it with write-back on, trusting 127.0.0.1 as a proxy
    (so that each test names its client address in ``X-Forwarded-For``)."""
    hub = start_devhub(tmp / "hub", lease_seconds=4)
    try:
        setup_config(
            tmp / "connector",
            directory_cfg,
            hub.ticket_url,
            POLL_WAIT_SECONDS=2,
            ENABLE_WRITE_BACK=True,
            TRUSTED_PROXIES=["127.0.0.1"],
            **extra,
        )
        proc = ConnectorProcess(tmp / "connector").start()
        try:
            yield hub, proc
        finally:
            proc.stop()
    finally:
        hub.stop()


def csrf(text: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert found, text[:500]
    return found.group(1)


def ticket(text: str) -> str:
    found = re.search(r'name="step" value="([^"]+)"', text)
    assert found, text[:800]
    return found.group(1)


def message(text: str) -> str:
    found = re.search(r'id="message" role="alert">([^<]*)<', text)
    return found.group(1).replace("&#39;", "'") if found else ""


class Browserless:
    """The form walked with requests (one session, one client address via the proxy)."""

    def __init__(self, proc: ConnectorProcess, client: str = "192.0.2.10") -> None:
        self.proc = proc
        self.s = requests.Session()
        self.s.headers["X-Forwarded-For"] = client
        self.query = {"wtrealm": "urn:acme", "wctx": "ctx-pw"}

    def sign_in(self, username: str, password: str) -> requests.Response:
        page = self.s.get(self.proc.url + "/wsfed", params=self.query, timeout=10)
        data = {
            **self.query,
            "username": username,
            "password": password,
            "csrf_token": csrf(page.text),
        }
        return self.s.post(self.proc.url + "/wsfed", data=data, allow_redirects=False, timeout=30)

    def change(
        self, page: requests.Response, new: str, again: str | None = None, **kw: str
    ) -> requests.Response:
        data = {
            "csrf_token": csrf(page.text),
            "step": ticket(page.text),
            "new_password": new,
            "new_password2": new if again is None else again,
            "action": "change",
            **kw,
        }
        return self.s.post(
            self.proc.url + "/wsfed/password", data=data, allow_redirects=False, timeout=30
        )


def _detached(element: Any) -> bool:
    """Whether ``element``'s page has been replaced. Chromium says so as a stale element, or,
    while the next document is being swapped in, as an inspector error that selenium does not
    map to one ("Node with given id does not belong to the document")."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def chromium_change(browser: Any, url: str, username: str, old: str) -> Any:
    """Sign in at ``url`` in ``browser``; the change step's submit function, once shown."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    browser.wait_for("#username").send_keys(username)
    browser.driver.find_element("id", "password").send_keys(old)
    browser.driver.find_element("id", "submit").click()
    browser.wait_for("#new_password")
    WebDriverWait(browser.driver, browser.timeout).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )

    def attempt(new: str) -> str:
        """Submit ``new`` twice; the page's message (empty once the step is left)."""
        browser.wait_for("#new_password").send_keys(new)
        browser.driver.find_element("id", "new_password2").send_keys(new)
        button = browser.driver.find_element("id", "submit")
        button.click()
        wait = WebDriverWait(browser.driver, browser.timeout)
        wait.until(lambda _: _detached(button))  # the next page replaced this one
        # and is whole: elements found while it is still being parsed can belong to a document
        # that is about to be swapped ("Node ... does not belong to the document")
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        browser.wait_for("body")
        found = browser.texts("#message")
        return found[0] if found else ""

    return attempt


def wait_for_text(browser: Any, url_prefix: str, text: str) -> None:
    """Wait until the browser shows ``text`` on a page under ``url_prefix``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser.driver, browser.timeout).until(
            lambda d: (
                d.current_url.startswith(url_prefix)
                and text in d.find_element("tag name", "body").text
            )
        )
    except TimeoutException:
        raise AssertionError(
            f"{text!r} not at {url_prefix}: {browser.url}\n{browser.text()[:800]}"
        ) from None
