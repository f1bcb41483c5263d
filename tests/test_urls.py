"""connector.urls: proxy credentials kept out of messages (``hub_url_problem``'s table is in
tests/channel/test_hubinfo.py, beside the hub's other URL checks)."""

from urllib.parse import unquote

import pytest

from connector.urls import scrub_proxy, without_userinfo


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


def test_an_unparsable_proxy_url_is_never_echoed():
    assert without_userinfo("http://u:pw-x9@[::1") == "<an invalid URL>"
