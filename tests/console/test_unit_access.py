"""Who may reach the console, decided without Flask: every combination of listener, peer, Host."""

import itertools

import pytest

from connector.web.console.access import ALSO_ON_CONSOLE, Decision, decide

CONSOLE = ("127.0.0.1", 4001)
PEERS = {"127.0.0.1": True, "::1": True, "127.8.9.10": True, "192.0.2.7": False, "": False}
HOSTS = {
    None: True,
    "localhost": True,
    "localhost:4001": True,
    "LOCALHOST.": True,
    "127.0.0.1:4001": True,
    "[::1]:4001": True,
    "rebound.example.com": False,
    "127.0.0.1.nip.io": False,
    "[::ffff:192.0.2.7]": False,
}


def ask(path, port="4001", peer="127.0.0.1", host="localhost:4001", console=CONSOLE):
    return decide(path, console_address=console, server_port=port, remote_addr=peer, host=host)


@pytest.mark.parametrize(
    ("port", "peer", "host"), itertools.product(["4001", "4000", None], PEERS, HOSTS)
)
def test_console_pages_only_on_its_listener_from_loopback(port, peer, host):
    allowed = port == "4001" and PEERS[peer] and HOSTS[host]
    for path in ("/console", "/console/", "/console/login", "/console/setup"):
        expected = Decision.SERVE if allowed else Decision.NOT_FOUND
        assert ask(path, port, peer, host) is expected, (path, port, peer, host)


def test_no_console_listener_no_console():
    assert ask("/console/login", console=None) is Decision.NOT_FOUND
    assert ask("/wsfed", console=None) is Decision.SERVE
    assert ask("/", console=None) is Decision.SERVE


def test_the_console_listener_serves_nothing_else():
    assert ask("/") is Decision.TO_CONSOLE
    for path in ALSO_ON_CONSOLE:
        assert ask(path) is Decision.SERVE
    for path in ("/wsfed", "/consolex", "/console-x", "/metrics/", "/health/x", "//console/"):
        assert ask(path) is Decision.NOT_FOUND, path


def test_the_public_listener_never_serves_the_console():
    assert ask("/wsfed", port="4000") is Decision.SERVE
    assert ask("/", port="4000") is Decision.SERVE
    assert ask("/console/", port="4000") is Decision.NOT_FOUND
