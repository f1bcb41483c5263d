"""The agent's HTTP/1.1 connection: answers read as http.client reads them, requests as sent."""

from __future__ import annotations

import http.client
import socket

import pytest
from rawhttp import RawHub, read_request

from connector.channel.http1 import Connection, _host_header


class CannedHub(RawHub):
    """Answers each request on a connection with the next of ``answers`` (raw bytes), then
    closes the connection once they are used up."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = answers
        super().__init__()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            rest = b""
            for answer in self.answers:
                request, rest = read_request(conn, rest)
                if not request:
                    break
                self.requests.append(request)
                conn.sendall(answer)
            conn.shutdown(socket.SHUT_RDWR)


def _ours(port: int, body: bytes = b"{}") -> tuple[int, str, dict[str, str], bytes, bool]:
    conn = Connection("127.0.0.1", port, timeout=5, context=None)
    conn.connect()
    try:
        status, reason, headers, content, will_close = conn.post("/agent/x", body, {"A": "b"})
    finally:
        conn.close()
    wanted = {n: headers.get(n) for n in ("Content-Type", "Retry-After", "Date", "X-Odd")}
    return status, reason, wanted, content, will_close


def _stdlib(port: int, body: bytes = b"{}") -> tuple[int, str, dict[str, str], bytes, bool]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/agent/x", body, {"A": "b"})
        resp = conn.getresponse()
        content = resp.read()
        wanted = {n: resp.headers.get(n) for n in ("Content-Type", "Retry-After", "Date", "X-Odd")}
        return resp.status, resp.reason, wanted, content, bool(resp.will_close)
    finally:
        conn.close()


ANSWERS = {
    "length, kept alive": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b'Content-Length: 13\r\n\r\n{"acked": []}',
    "lower-case names, repeated header": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"
    b"x-odd: one\r\nX-ODD: two\r\n\r\n{}",
    "chunked, extensions and trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'5;ext=1\r\n{"a":\r\n3\r\n 1}\r\n0\r\nX-Trailer: t\r\n\r\n',
    "HTTP/1.0 to the connection's end": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    b"all of it",
    "HTTP/1.0 kept alive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    "closed after": b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n"
    b"Date: Sat, 05 Dec 2026 20:00:00 GMT\r\nContent-Length: 2\r\n\r\n{}",
    "100 Continue first": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    "no content": b"HTTP/1.1 204 No Content\r\nX-Odd: 1\r\n\r\n",
    "retry later, a reason of words": b"HTTP/1.1 503 Service Temporarily Unavailable\r\n"
    b"Retry-After: 7\r\nContent-Length: 0\r\n\r\n",
    "no reason": b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n{}",
}


@pytest.mark.parametrize("answer", list(ANSWERS.values()), ids=list(ANSWERS))
def test_an_answer_reads_as_http_client_reads_it(answer):
    hubs = CannedHub(answer), CannedHub(answer)
    try:
        assert _ours(hubs[0].port) == _stdlib(hubs[1].port)
    finally:
        for hub in hubs:
            hub.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", http.client.RemoteDisconnected),
        (b"SSH-2.0-OpenSSH\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 2000 OK\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", http.client.IncompleteRead),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n", http.client.LineTooLong),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
            http.client.HTTPException,
        ),
    ],
    ids=["nothing", "not HTTP", "bad status", "body cut short", "long line", "many headers"],
)
def test_a_broken_answer_fails_as_with_http_client(answer, error):
    hubs = CannedHub(answer), CannedHub(answer)
    try:
        with pytest.raises(error):
            _ours(hubs[0].port)
        with pytest.raises(error):
            _stdlib(hubs[1].port)
    finally:
        for hub in hubs:
            hub.close()


def test_requests_on_a_kept_connection_are_whole_and_in_order():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    hub = CannedHub(ok, ok)
    conn = Connection("127.0.0.1", hub.port, timeout=5, context=None)
    conn.connect()
    try:
        for n in (1, 2):
            answer = conn.post("/t/agent/poll", b'{"n":%d}' % n, {"Authorization": "Bearer x"})
            assert answer[0] == 200 and answer[3] == b"{}" and answer[4] is False
    finally:
        conn.close()
        hub.close()
    first, second = hub.requests
    assert first.startswith(
        b"POST /t/agent/poll HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % hub.port
    ) and first.endswith(b'\r\n\r\n{"n":1}')
    assert b"\r\nContent-Length: 7\r\n" in first and b"\r\nAuthorization: Bearer x\r\n" in first
    assert b"\r\nAccept-Encoding: identity\r\n" in first and second.endswith(b'{"n":2}')


def test_a_header_or_path_that_would_change_the_request_is_refused():
    hub = CannedHub(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    conn = Connection("127.0.0.1", hub.port, timeout=5, context=None)
    conn.connect()
    try:
        for headers in ({"A": "b\r\nX-Injected: 1"}, {"A\r\nB": "c"}, {"": "c"}, {"A:B": "c"}):
            with pytest.raises(ValueError):
                conn.post("/p", b"", headers)
        with pytest.raises(http.client.InvalidURL):
            conn.post("/p HTTP/1.1\r\nX: y", b"", {})
    finally:
        conn.close()
        hub.close()
    assert hub.requests == []


def test_the_host_header_is_http_clients():
    assert _host_header("hub.example", 443, 443) == "hub.example"
    assert _host_header("hub.example", 8443, 443) == "hub.example:8443"
    assert _host_header("::1", 8080, 80) == "[::1]:8080"
    assert _host_header("bücher.example", 80, 80) == "xn--bcher-kva.example"


def test_a_post_before_connect_fails():
    with pytest.raises(http.client.NotConnected):
        Connection("127.0.0.1", 9, timeout=1, context=None).post("/", b"", {})


def test_the_connection_does_not_wait_on_nagle():
    hub = CannedHub(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    conn = Connection("127.0.0.1", hub.port, timeout=5, context=None)
    conn.connect()
    try:
        assert conn.sock is not None
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        conn.close()
        hub.close()
    assert conn.sock is None
