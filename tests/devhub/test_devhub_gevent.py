"""The devhub under gevent's WSGI server, as the bench serves it (``tests/bench/fasthub.py``).

gunicorn's ``gevent_pywsgi`` worker (the bench's is ``hubworker.HubPyWSGIWorker``)
monkey-patches the process before it loads the app: the hub's ``threading`` waits (a long
poll, a browser waiting for its relay) become greenlet waits, and the long poll's peer-gone
check reads the socket from ``environ['gunicorn.sock']``. The waiting tests of
``test_devhub_poll.py`` and ``test_devhub_sessions.py`` run here again on such a hub, and
``hubworker.Headers`` is checked against ``http.client``'s parser. gevent is in the test
extra (the bench runs without it, on gthread, saying so).
"""

from __future__ import annotations

import http.client
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import gevent  # noqa: F401  (a missing gevent fails here, never a silent skip)
import pytest
from test_devhub_poll import (
    test_a_long_poll_returns_as_soon_as_a_command_is_queued as _long_poll_wakes,
)
from test_devhub_poll import test_a_poll_whose_agent_went_away_takes_nothing as _poll_gone
from test_devhub_poll import test_an_idle_long_poll_returns_after_wait as _long_poll_idles
from test_devhub_sessions import (
    test_the_hub_waits_for_a_ref_relayed_after_the_browser_came as _browser_waits,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from fasthub import HUB_WORKER, GunicornDevHub
from hubworker import MAX_HEADERS, MAX_LINE, Headers


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornDevHub]:
    """This module's hub (``conftest.py``'s ``hub`` and ``agent`` are built on it)."""
    hub = GunicornDevHub(tmp_path_factory.mktemp("gevent-hub"), HUB_WORKER)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def test_a_long_poll_wakes_when_a_command_is_queued(hub, agent):
    _long_poll_wakes(hub, agent)


def test_an_idle_long_poll_returns_after_its_wait(agent):
    _long_poll_idles(agent)


def test_a_poll_whose_agent_went_away_takes_nothing(hub, agent):
    _poll_gone(hub, agent)


def test_a_browser_waits_for_its_relay(hub, agent):
    _browser_waits(hub, agent)


WELL_FORMED = [
    b"Host: h\r\n\r\n",
    b"Host: h\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\nbody",
    b"HOST:h\r\naccept:  text/html ,*/*  \r\nX-Empty:\r\n\r\n",
    b"A: 1\r\nA: 2\r\n\r\n",  # the first one wins, as email.message's get
    b"A: 1\nB: 2\n\n",  # bare LF
    b"A: 1\r\n",  # the stream ends without a blank line
    b"\r\n",
    "X-Name: caf\u00e9\r\n\r\n".encode("latin-1"),
]


@pytest.mark.parametrize("raw", WELL_FORMED)
def test_headers_read_as_http_client_reads_them(raw):
    ours = Headers(io.BytesIO(raw), 0)
    theirs = http.client.parse_headers(io.BytesIO(raw))
    assert ours.status == ""
    assert [(n, v.strip()) for n, v in ours.items()] == [(n, v.strip()) for n, v in theirs.items()]
    for name in ("host", "HOST", "Content-Type", "content-length", "a", "missing"):
        assert ours.get(name) == (None if theirs.get(name) is None else theirs.get(name).strip())
    assert ours.typeheader == ours.getheader("Content-Type")


def test_headers_stop_at_the_blank_line():
    fp = io.BytesIO(b"A: 1\r\n\r\nB: 2\r\n\r\n")
    assert Headers(fp, 0).items() == [("A", "1")]
    assert fp.read() == b"B: 2\r\n\r\n"


def test_headers_delete_every_value_of_a_name_and_render_lines():
    headers = Headers(io.BytesIO(b"Content-Length: 5\r\ncontent-length: 6\r\nA: b\r\n\r\n"))
    del headers["CONTENT-LENGTH"]
    assert headers.get("content-length") is None
    assert list(headers.headers) == ["A: b\r\n"]


def test_a_folded_line_joins_the_header_before_it():
    headers = Headers(io.BytesIO(b"A: one\r\n  two\r\nB: 3\r\n\r\n"))
    assert headers.items() == [("A", "one two"), ("B", "3")]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"no colon\r\n\r\n", "Invalid header line"),
        (b"A: 1\r\n\r\r\n\r\n", "Invalid header line"),
        (b" folded first\r\n\r\n", "Invalid header line"),
        (b": no name\r\n\r\n", "Invalid header line"),
        (b"Spaced : name\r\n\r\n", "Invalid header line"),
        (b"A: " + b"x" * MAX_LINE + b"\r\n\r\n", "Line too long"),
        (b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n", "Too many headers"),
    ],
)
def test_malformed_headers_set_a_status(raw, status):
    assert Headers(io.BytesIO(raw), 0).status == status


def test_as_many_headers_as_allowed_are_read():
    raw = b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n"
    assert len(Headers(io.BytesIO(raw), 0).items()) == MAX_HEADERS
