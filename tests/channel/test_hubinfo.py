"""The checks on the hub's ticket information, as pure functions (the devhub-driven cases are
in ``tests/hostile/test_hostile_hub_answers.py``)."""

import ipaddress

import pytest

from connector.channel.hubinfo import PRIVATE_NETWORKS, inside, origin
from connector.urls import hub_url_problem


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Hub.Example/tenants/acme", "https://hub.example"),
        ("https://hub.example:443/x", "https://hub.example"),
        ("https://hub.example:8443/x", "https://hub.example:8443"),
        ("http://127.0.0.1:80/x", "http://127.0.0.1"),
        ("http://[::1]:8700/x", "http://[::1]:8700"),
        ("HTTPS://hub.example/", "https://hub.example"),
    ],
)
def test_origin(url, expected):
    assert origin(url) == expected


@pytest.mark.parametrize(
    ("cidr", "private"),
    [
        ("10.1.2.0/24", True),
        ("10.0.0.0/8", True),
        ("172.16.0.0/12", True),
        ("172.31.255.255/32", True),
        ("192.168.0.0/16", True),
        ("127.0.0.0/8", True),
        ("fd00:1::/64", True),
        ("::1/128", True),
        ("10.0.0.0/7", False),
        ("172.0.0.0/8", False),
        ("0.0.0.0/0", False),
        ("::/0", False),
        ("8.8.8.8/32", False),
        ("169.254.0.0/16", False),
        ("::ffff:10.0.0.1/128", False),
    ],
)
def test_private_ranges(cidr, private):
    assert inside(ipaddress.ip_network(cidr), PRIVATE_NETWORKS) is private


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hub.example/t", True),
        ("http://127.0.0.1:8700/t", True),
        ("http://127.9.9.9/t", True),
        ("http://localhost:8700/t", True),
        ("http://LOCALHOST./t", True),
        ("http://[::1]:8700/t", True),
        ("http://hub.example/t", False),
        ("http://10.0.0.1/t", False),
        ("http://[::ffff:127.0.0.1]/t", False),
        ("http://127.0.0.1.nip.io/t", False),
        ("https:///t", False),
        ("https://hub.example:99999/t", False),
        ("ws://hub.example/t", False),
        ("hub.example/t", False),
    ],
)
def test_hub_url_problem(url, ok):
    assert (hub_url_problem(url) is None) is ok
