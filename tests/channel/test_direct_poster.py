"""DirectPoster: the agent's results and sign-ins on a kept http.client connection."""

from __future__ import annotations

import socket
import threading
import types

import pytest
from rawhttp import RawHub, read_request

from connector.channel.client import (
    DirectPoster,
    HubRejected,
    HubUnavailable,
    post_json_direct,
)

ANSWER = (
    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Connection: keep-alive\r\n\r\n%s"
)


class OneShotHub(RawHub):
    """Answers one request per connection, then closes it without saying so (as a hub whose
    keep-alive timeout passed): a kept connection is stale on its next use."""

    def __init__(self, status: int = 200, body: bytes = b'{"acked": ["r1"]}') -> None:
        self.status, self.body = status, body
        super().__init__()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request, _ = read_request(conn, b"")
            self.requests.append(request)
            conn.sendall(ANSWER % (self.status, len(self.body), self.body))


SETTINGS = types.SimpleNamespace(hub_connect_timeout=5, https_proxy=None, hub_ca_file=None)


@pytest.fixture
def hub():
    h = OneShotHub()
    yield h
    h.close()


def _post(poster: DirectPoster, port: int) -> object:
    url = f"http://127.0.0.1:{port}/tenants/acme/agent/signins"
    body, _, _ = post_json_direct(
        poster, SETTINGS, url, {"signins": []}, {"Authorization": "Bearer t"}, 5
    )
    return body


def test_a_connection_the_hub_closed_is_replaced_and_the_request_sent_again(hub):
    poster = DirectPoster(SETTINGS, f"http://127.0.0.1:{hub.port}")  # type: ignore[arg-type]
    assert _post(poster, hub.port) == {"acked": ["r1"]}
    assert _post(poster, hub.port) == {"acked": ["r1"]}  # the kept one was closed: a new one
    assert hub.connections == 2
    first = hub.requests[0]
    assert first.startswith(b"POST /tenants/acme/agent/signins HTTP/1.1\r\n")
    assert b"Authorization: Bearer t" in first and b"Content-Type: application/json" in first
    poster.close()


def test_answers_are_read_as_request_json_reads_them():
    for status, body, error in (
        (503, b"{}", HubUnavailable),
        (401, b'{"error": "invalid_token", "message": "no"}', HubRejected),
        (200, b"not json", HubRejected),
    ):
        hub = OneShotHub(status, body)
        poster = DirectPoster(SETTINGS, f"http://127.0.0.1:{hub.port}")  # type: ignore[arg-type]
        with pytest.raises(error):
            _post(poster, hub.port)
        hub.close()


def test_an_unreachable_hub_is_unavailable():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    poster = DirectPoster(SETTINGS, f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
    with pytest.raises(HubUnavailable, match="cannot reach the hub"):
        _post(poster, port)


class HoldingHub(OneShotHub):
    """Answers the first request on a connection (kept alive), then holds the next one
    unanswered (a long poll held)."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self._held: list[socket.socket] = []
        super().__init__(body=b'{"commands": []}')

    def _handle(self, conn: socket.socket) -> None:
        self._held.append(conn)
        _, rest = read_request(conn, b"")
        conn.sendall(ANSWER % (200, len(self.body), self.body))
        read_request(conn, rest)
        self.holding.set()

    def close(self) -> None:
        super().close()
        for conn in self._held:
            conn.close()


def test_a_cut_fails_the_waiting_request_at_once_and_it_is_not_sent_again():
    """Drain cuts an idle long poll: the poll fails now (not after its hold) and is not sent
    once more on a new connection, as a kept connection the hub closed would be."""
    hub = HoldingHub()
    poster = DirectPoster(SETTINGS, f"http://127.0.0.1:{hub.port}")  # type: ignore[arg-type]
    failed: list[BaseException] = []

    def poll() -> None:
        url = f"http://127.0.0.1:{hub.port}/agent/poll"
        try:
            post_json_direct(poster, SETTINGS, url, {"max": 1, "wait": 0}, {}, 60)
            post_json_direct(poster, SETTINGS, url, {"max": 1, "wait": 60}, {}, 60)  # kept
        except BaseException as exc:
            failed.append(exc)

    waiting = threading.Thread(target=poll)
    waiting.start()
    assert hub.holding.wait(10)
    assert poster.cut() == 1
    waiting.join(10)
    assert not waiting.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], HubUnavailable), failed
    assert hub.connections == 1
    hub.close()
