"""Real Kerberos clients for the sign-in end-to-end tests: kinit, curl, pyspnego, Chromium.

Plain Python (no pytest), like ``tests/servers.py``. Every client gets its Kerberos
environment explicitly (``KRB5_CONFIG``, ``KRB5CCNAME``); nothing here touches ``/etc``.

* :func:`kinit` -- a TGT for a principal into a ccache file of the caller's.
* :func:`curl_negotiate` -- ``curl --negotiate -u :`` (the 401 round trip, then the token),
  every response's headers kept, and the ``Authorization`` values curl sent (from ``-v``).
* :func:`spnego_header` / :func:`spnego_finish` -- pyspnego's client (``protocol="negotiate"``)
  with a username and password (no ccache), and the check of the server's mutual token.
* :func:`ntlm_negotiate_token` -- a real NTLM NEGOTIATE message from pyspnego.
* :class:`Chromium` -- headless Chromium under chromedriver (selenium), with a fresh profile
  whose ``Local State`` says a Negotiate header was already seen (see below).

A missing binary raises ``RuntimeError``: the tests fail, they never skip.

The Chromium pitfall: on Linux the network service runs sandboxed and Chromium allows GSSAPI
only after it once saw ``WWW-Authenticate: Negotiate``, recorded in ``<user-data-dir>/Local
State`` as ``{"net": {"received_http_auth_negotiate_headers": true}}``. A fresh profile
therefore gets that file before launch, or the first navigation shows the 401 body.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spnego
from requests.structures import CaseInsensitiveDict
from servers import find_binary

# --------------------------------------------------------------------------------------
# Kerberos environment of this (the test) process, for the in-process pyspnego client
# --------------------------------------------------------------------------------------

_ENV_LOCK = threading.RLock()


@contextlib.contextmanager
def krb5_environment(**values: str) -> Iterator[None]:
    """Set Kerberos variables in ``os.environ`` for the block, then restore them.

    libkrb5 reads ``KRB5_CONFIG`` / ``KRB5CCNAME`` whenever it makes a context, so the
    in-process GSSAPI client follows. Only for short client calls: anything started in the
    block (a subprocess) would inherit the values.
    """
    with _ENV_LOCK:
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old


# --------------------------------------------------------------------------------------
# kinit
# --------------------------------------------------------------------------------------


def kinit(krb5_conf: str, principal: str, password: str, ccache: str | os.PathLike[str]) -> str:
    """Get a TGT for ``principal`` (``user@REALM``) into the file ``ccache``; its name.

    Raises:
        RuntimeError: kinit is missing or failed.
    """
    binary = find_binary("kinit", "krb5-user")
    name = f"FILE:{Path(ccache).resolve()}"
    result = subprocess.run(
        [binary, principal],
        input=password + "\n",
        env={**os.environ, "KRB5_CONFIG": krb5_conf, "KRB5CCNAME": name},
        capture_output=True,
        text=True,
        check=False,
        timeout=20,
    )
    if result.returncode:
        raise RuntimeError(f"kinit {principal} failed: {result.stderr.strip()}")
    return name


# --------------------------------------------------------------------------------------
# curl --negotiate
# --------------------------------------------------------------------------------------


@dataclass
class CurlResult:
    """What ``curl`` saw: every response's status and headers, the last body."""

    responses: list[tuple[int, CaseInsensitiveDict[str]]]
    body: str
    sent_authorization: list[str] = field(default_factory=list)
    stderr: str = ""

    @property
    def status(self) -> int:
        """The last response's status."""
        return self.responses[-1][0]

    @property
    def headers(self) -> CaseInsensitiveDict[str]:
        """The last response's headers."""
        return self.responses[-1][1]


def curl_binary() -> str:
    """curl, checked to be built with GSS-API and SPNEGO.

    Raises:
        RuntimeError: curl is missing or cannot do Negotiate.
    """
    binary = find_binary("curl", "curl")
    version = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False).stdout
    features = next((ln for ln in version.splitlines() if ln.startswith("Features:")), "")
    missing = [f for f in ("GSS-API", "SPNEGO") if f not in features.split()]
    if missing:
        raise RuntimeError(f"curl lacks {', '.join(missing)} (features: {features})")
    return binary


def _header_blocks(text: str) -> list[tuple[int, CaseInsensitiveDict[str]]]:
    blocks: list[tuple[int, CaseInsensitiveDict[str]]] = []
    for block in re.split(r"\r?\n\r?\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines or not lines[0].startswith("HTTP/"):
            continue
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        blocks.append((int(lines[0].split()[1]), headers))
    return blocks


def curl_negotiate(
    url: str,
    workdir: str | os.PathLike[str],
    *,
    krb5_conf: str,
    ccache: str,
    extra: tuple[str, ...] = (),
) -> CurlResult:
    """``curl --negotiate -u : URL`` (no redirects followed) with this Kerberos environment.

    Raises:
        RuntimeError: curl is missing, cannot do Negotiate, or failed (exit status).
    """
    binary = curl_binary()
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    headers_file, body_file = out / "curl.headers", out / "curl.body"
    # -v: curl prints the headers it sends ("> Authorization: ...") on stderr
    command = [binary, "-sS", "-v", "--negotiate", "-u", ":", "--max-time", "30"]
    command += ["-D", str(headers_file), "-o", str(body_file), *extra, url]
    result = subprocess.run(
        command,
        env={**os.environ, "KRB5_CONFIG": krb5_conf, "KRB5CCNAME": ccache},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode:
        raise RuntimeError(f"curl failed ({result.returncode}): {result.stderr[-2000:]}")
    sent = re.findall(r"^> Authorization: (.+?)\r?$", result.stderr, re.MULTILINE | re.IGNORECASE)
    return CurlResult(
        responses=_header_blocks(headers_file.read_text(errors="replace")),
        body=body_file.read_text(errors="replace") if body_file.exists() else "",
        sent_authorization=sent,
        stderr=result.stderr,
    )


# --------------------------------------------------------------------------------------
# pyspnego
# --------------------------------------------------------------------------------------


def spnego_header(
    principal: str, password: str, krb5_conf: str, host: str = "localhost"
) -> tuple[Any, str]:
    """A pyspnego Negotiate client for ``principal`` (no ccache: password) and the
    ``Authorization`` value of its first token."""
    with krb5_environment(KRB5_CONFIG=krb5_conf, KRB5CCNAME="MEMORY:e2e-spnego"):
        ctx = spnego.client(
            principal, password, hostname=host, service="HTTP", protocol="negotiate"
        )
        token = ctx.step()
    if not token:
        raise RuntimeError("pyspnego produced no initial token")
    return ctx, "Negotiate " + base64.b64encode(token).decode()


def spnego_finish(ctx: Any, www_authenticate: str | None, krb5_conf: str) -> bool:
    """Feed the server's ``WWW-Authenticate: Negotiate <token>`` to the client context:
    True if mutual authentication completed (the server proved it holds the key)."""
    scheme, _, data = (www_authenticate or "").partition(" ")
    if scheme.lower() != "negotiate" or not data.strip():
        return False
    with krb5_environment(KRB5_CONFIG=krb5_conf, KRB5CCNAME="MEMORY:e2e-spnego"):
        ctx.step(base64.b64decode(data.strip()))
    return bool(ctx.complete)


def ntlm_negotiate_token() -> bytes:
    """A real NTLM NEGOTIATE (type 1) message, as a browser without Kerberos sends it."""
    ctx = spnego.client("dave", "davepw", hostname="localhost", service="HTTP", protocol="ntlm")
    token = ctx.step()
    if not token or not token.startswith(b"NTLMSSP\x00"):
        raise RuntimeError(f"pyspnego gave no NTLM negotiate message: {token!r}")
    return bytes(token)


# --------------------------------------------------------------------------------------
# Chromium
# --------------------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
)


class Chromium:
    """Headless Chromium driven through chromedriver, with its own Kerberos environment.

    ``env`` (``KRB5_CONFIG``, ``KRB5CCNAME``) goes to chromedriver's process, whose child
    the browser is. Use as a context manager; ``driver`` is the selenium WebDriver.

    Raises:
        RuntimeError: chromium or chromedriver is missing.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        env: dict[str, str],
        allowlist: str = "localhost",
        timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.env = env
        self.allowlist = allowlist
        self.timeout = timeout
        self.driver: Any = None

    def __enter__(self) -> Chromium:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser = find_binary("chromium", "chromium")
        chromedriver = find_binary("chromedriver", "chromium-driver")
        profile = self.workdir / "profile"
        if profile.exists():
            shutil.rmtree(profile)
        profile.mkdir(parents=True)
        (profile / "Local State").write_text(
            json.dumps({"net": {"received_http_auth_negotiate_headers": True}})
        )
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--auth-server-allowlist={self.allowlist}")
        service = Service(
            executable_path=chromedriver,
            env={**os.environ, **self.env},
            log_output=str(self.workdir / "chromedriver.log"),
        )
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(self.timeout)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.quit()
            self.driver = None

    # ---- helpers ---------------------------------------------------------------------
    def get(self, url: str) -> None:
        """Navigate and wait for the load to finish."""
        self.driver.get(url)

    def wait_for(self, css: str, timeout: float | None = None) -> Any:
        """The first element matching ``css`` once present.

        Raises:
            AssertionError: it did not appear (with the URL and page text).
        """
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout or self.timeout).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
            )
        except TimeoutException:
            raise AssertionError(
                f"{css!r} not found on {self.driver.current_url}:\n{self.text()[:2000]}"
            ) from None

    def texts(self, css: str) -> list[str]:
        """The text of every element matching ``css``."""
        from selenium.webdriver.common.by import By

        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css)]

    def text(self) -> str:
        """The page's visible text."""
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    @property
    def url(self) -> str:
        """The current URL."""
        return str(self.driver.current_url)
