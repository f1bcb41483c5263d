"""The devhub under the bench's event-loop server (``tests/bench/hubserver.py``).

The relay and the callback of a ``ref`` relayed already are answered on the loop; a long poll
and a browser waiting for its relay go to the thread pool, where their ``threading`` waits
hold a thread. The waiting tests of ``test_devhub_poll.py`` and ``test_devhub_sessions.py``
run here again (the long poll's peer-gone check reads ``environ['devhub.socket']``), then the
server's own HTTP/1.1: order of pipelined answers, keep-alive and close, limits, HEAD, chunked
bodies. httptools and uvloop are in the test extra.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httptools  # noqa: F401  (a missing httptools fails here, never a silent skip)
import pytest
import requests
import uvloop  # noqa: F401
from hub_agent import HubAgent

# the waiting tests, collected here again: on this module's hub
from test_devhub_poll import (  # noqa: F401
    test_a_long_poll_returns_as_soon_as_a_command_is_queued,
    test_a_poll_whose_agent_went_away_takes_nothing,
    test_an_idle_long_poll_returns_after_wait,
)
from test_devhub_sessions import (  # noqa: F401
    test_the_hub_waits_for_a_ref_relayed_after_the_browser_came,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from fasthub import LoopDevHub
from hubserver import MAX_HEADER_BYTES

PROFILE = {"user_id": "erin", "groups": ["staff"]}
#: a chunked body over the devhub's MAX_CONTENT_LENGTH (16 MB): 17 chunks of 1 MB
OVER_CHUNKS = (b"100000\r\n" + b"x" * (1 << 20) + b"\r\n") * 17


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopDevHub]:
    """This module's hub (``conftest.py``'s ``hub`` and ``agent`` are built on it)."""
    hub = LoopDevHub(tmp_path_factory.mktemp("loop-hub"))
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
    assert "Traceback" not in hub.log_file.read_text(), hub.log_file.read_text()


# ---- raw HTTP ---------------------------------------------------------------------------------


def connect(hub: LoopDevHub) -> socket.socket:
    parts = urlsplit(hub.base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """An answer's status and headers (names in lower case) from its head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {n.lower(): v.strip() for n, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` answers from ``sock`` (each framed by its Content-Length)."""
    buffer = b""
    answers = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed after {len(answers)} answers: {buffer!r}")
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        status, headers = parse_head(head)
        length = int(headers.get("content-length", "0"))
        while len(buffer) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("closed inside a body")
            buffer += chunk
        answers.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return answers


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` (an end of stream within the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def relay_request(
    hub: LoopDevHub, agent: HubAgent, ref: str, chunked: bool = False, wctx: str = "w"
) -> bytes:
    item = {"ref": ref, "wctx": wctx, "profile": PROFILE, "method": "form"}
    body = json.dumps({"signins": [item]}).encode()
    path = urlsplit(hub.ad_hub).path + "/agent/signins"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {agent.token()}\r\n"
        "X-Connector-Protocol: 2\r\nContent-Type: application/json\r\n"
    )
    if chunked:
        half = len(body) // 2
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]))
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed + b"0\r\n\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def callback_request(
    hub: LoopDevHub, ref: str, method: str = "GET", close: bool = False, wctx: str = "w"
) -> bytes:
    query = urlencode({"ref": ref, "wctx": wctx})
    path = urlsplit(hub.ad_hub).path + "/login/callback?" + query
    extra = "Connection: close\r\n" if close else ""
    return f"{method} {path} HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n{extra}\r\n".encode()


def test_a_relay_and_its_callback_pipelined_on_one_connection(hub, agent):
    ref = secrets.token_urlsafe(24)
    with connect(hub) as sock:
        sock.sendall(relay_request(hub, agent, ref, chunked=True) + callback_request(hub, ref))
        (s1, h1, b1), (s2, h2, b2) = read_answers(sock, 2)
    assert (s1, json.loads(b1)) == (200, {"acked": [ref]})
    assert s2 == 200 and b"erin" in b2 and h2["content-type"].startswith("text/html")
    assert "date" in h1 and "connection" not in h1  # kept alive
    assert hub.state()["events"]["sessionsRedeemed"] == 1


def test_answers_keep_the_order_of_their_requests_across_the_pool(hub, agent):
    """A callback that waits (in the pool) and, pipelined behind it, the relay of its ref and
    a second callback answered on the loop: the answers come in the requests' order."""
    ref, other = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with connect(hub) as browser, connect(hub) as relays:
        first, second = (
            callback_request(hub, ref, wctx="first-wctx"),
            callback_request(hub, other, wctx="second-wctx"),
        )
        browser.sendall(first + second)
        deadline = time.monotonic() + 10
        while hub.state()["waiting"] < 1:  # the first callback waits at the hub
            assert time.monotonic() < deadline
            time.sleep(0.02)
        relays.sendall(relay_request(hub, agent, other, wctx="second-wctx"))  # the second's first
        assert read_answers(relays, 1)[0][0] == 200
        relays.sendall(relay_request(hub, agent, ref, wctx="first-wctx"))
        assert read_answers(relays, 1)[0][0] == 200
        (s1, _, b1), (s2, _, b2) = read_answers(browser, 2)
    assert s1 == s2 == 200
    assert b"first-wctx" in b1 and b"second-wctx" in b2
    assert hub.state()["events"]["sessionsRedeemed"] == 2


def test_the_loop_answers_while_pool_threads_wait(hub, agent):
    """A long poll held by an injected delay holds a pool thread, not the loop: a sign-in's
    relay and callback are answered meanwhile."""
    hub.add_fault(delay=5, count=1, endpoint="poll")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (agent.poll(wait=0), done.set()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while hub.state()["pendingFaults"]:  # the poll took the fault: it sleeps in the pool
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ref = secrets.token_urlsafe(24)
    with connect(hub) as sock:
        sock.sendall(relay_request(hub, agent, ref) + callback_request(hub, ref))
        answers = read_answers(sock, 2)
    assert [a[0] for a in answers] == [200, 200]
    assert not done.is_set()  # the poll still sleeps
    thread.join(15)
    assert done.is_set()


def test_connection_close_and_http_1_0_close_after_the_answer(hub):
    ref = secrets.token_urlsafe(24)
    with connect(hub) as sock:
        sock.sendall(callback_request(hub, ref, close=True))
        ((status, headers, _),) = read_answers(sock, 1)
        assert headers["connection"] == "close" and closed_by_server(sock)
    assert status == 400  # an unknown ref (the hub's wait ended: not in this test's hub)
    path = urlsplit(hub.ad_hub).path + "/api/state"
    with connect(hub) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        ((status, headers, body),) = read_answers(sock, 1)
        assert status == 200 and "agents" in json.loads(body)
        assert closed_by_server(sock)
    with connect(hub) as sock:  # HTTP/1.0 asking to be kept
        sock.sendall(f"GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode() * 2)
        assert [a[0] for a in read_answers(sock, 2)] == [200, 200]


def test_head_gets_the_headers_without_the_body(hub):
    path = urlsplit(hub.ad_hub).path + "/api/state"
    with connect(hub) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: h\r\n\r\nGET {path} HTTP/1.1\r\n\r\n".encode())
        sock.settimeout(15)
        ((status, headers, _),) = read_answers_head(sock)
        assert status == 200 and int(headers["content-length"]) > 0
        ((status, _, body),) = read_answers(sock, 1)  # the next answer starts right after
        assert status == 200 and json.loads(body)


def read_answers_head(sock: socket.socket) -> list[tuple[int, dict[str, str], bytes]]:
    """One answer to a HEAD: its head only (the Content-Length announces a body not sent)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(1)  # byte by byte: nothing of the next answer is taken
    status, headers = parse_head(buffer.partition(b"\r\n\r\n")[0])
    return [(status, headers, b"")]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"x" * MAX_HEADER_BYTES + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 20000000\r\n\r\n" + b"x" * 65536, 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + OVER_CHUNKS, 413),
    ],
    ids=["request line", "header line", "headers too long", "body announced", "chunked body"],
)
def test_a_malformed_or_oversized_request_gets_its_error_and_a_close(hub, raw, status):
    with connect(hub) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the rest was sent
        ((got, headers, _),) = read_answers(sock, 1)
        assert (got, headers["connection"]) == (status, "close")
        assert closed_by_server(sock)
    assert hub.state()["agents"] is not None  # and the hub still serves


def test_a_header_spelt_with_an_underscore_is_not_taken_for_a_dash(hub, agent):
    """``X_Connector_Protocol`` would be HTTP_X_CONNECTOR_PROTOCOL too: dropped, so the
    relay lacks its protocol header and Flask refuses it."""
    ref = secrets.token_urlsafe(24)
    raw = relay_request(hub, agent, ref).replace(b"X-Connector-Protocol", b"X_Connector_Protocol")
    with connect(hub) as sock:
        sock.sendall(raw)
        ((status, _, body),) = read_answers(sock, 1)
    assert status == 400 and b"X-Connector-Protocol" in body


def test_a_sign_ins_two_requests_are_answered_on_the_loop(tmp_path):
    """The relay and the callback of a relayed ref never reach the pool; the registration,
    the admin API and a waiting callback do (the server counts both when it stops)."""
    hub = LoopDevHub(tmp_path)
    hub.start()
    try:
        agent = HubAgent(hub)
        agent.register()  # the pool: 1, and the start-up's state(): 1
        with connect(hub) as sock:
            for _ in range(3):
                ref = secrets.token_urlsafe(24)
                sock.sendall(relay_request(hub, agent, ref) + callback_request(hub, ref))
                assert [a[0] for a in read_answers(sock, 2)] == [200, 200]
    finally:
        hub.stop()
    assert "hubserver: requests answered {'pool': 2, 'loop': 6}" in hub.log_file.read_text()


def test_sigterm_ends_the_server_while_a_long_poll_waits(tmp_path):
    hub = LoopDevHub(tmp_path)
    hub.start()
    try:
        agent = HubAgent(hub)
        agent.register()
        outcome: list[str] = []

        def poll() -> None:
            try:
                agent.poll(wait=30)
                outcome.append("answered")
            except requests.RequestException:
                outcome.append("cut")

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        deadline = time.monotonic() + 10
        while not any(a.get("polling") for a in hub.agents()["agents"]):  # the poll waits
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        hub.stop()  # SIGTERM, SIGKILL only after 10 s
    assert hub.proc is not None and hub.proc.returncode == 0  # it exited on its own
    poller.join(10)
    assert outcome == ["cut"]  # the waiting poll's connection closed with the server
