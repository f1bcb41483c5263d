"""connector.urls: which hub URLs may be used, and proxy credentials kept out of messages."""

from urllib.parse import unquote

import pytest

from connector.urls import hub_url_problem, scrub_proxy, without_userinfo


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://bob:s3cret@proxy:3128", "http://***@proxy:3128"),
        ("http://bob@proxy:3128/", "http://***@proxy:3128/"),
        ("http://b%40b:p%40ss@proxy:3128", "http://***@proxy:3128"),
        ("http://proxy:3128", "http://proxy:3128"),
    ],
)
def test_proxy_credentials_are_never_shown(url, shown):
    assert without_userinfo(url) == shown
    text = f"failed: {url} (user {unquote(url[7:].split('@')[0])})"
    scrubbed = scrub_proxy(text, url)
    assert shown in scrubbed
    if "@" in url:
        for piece in ("s3cret", "p@ss", "p%40ss", "b@b:"):
            assert piece not in scrubbed


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://hub.example.test/agent", None),
        ("http://127.0.0.1:8080", None),
        ("http://[::1]:8080", None),
        ("http://localhost./x", None),
        ("http://hub.example.test", "must be https://"),
        ("http://127.0.0.1.example.test", "must be https://"),
        ("ftp://hub.example.test", "must be an https:// URL"),
        ("https://", "must be an https:// URL"),
        ("https://hub.example.test:99999", "is not a valid URL"),
    ],
)
def test_hub_urls(url, says):
    problem = hub_url_problem(url)
    assert problem == says if says is None else problem is not None and problem.startswith(says)


def test_an_unparsable_proxy_url_is_never_echoed():
    assert without_userinfo("http://u:pw-x9@[::1") == "<an invalid URL>"
