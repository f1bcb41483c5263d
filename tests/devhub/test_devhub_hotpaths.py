"""The relay and the callback served in front of Flask (``connector/devhub/hotpaths.py``) answer
exactly as Flask does.

Two devhubs built by the factory get the same requests: ``fast`` through the app (the hot
paths first), ``plain`` straight into Flask's own ``wsgi_app`` behind them. Their answers
(status, headers, body) and their counters must be the same, and the hot paths must have
served the common case themselves.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from hub_agent import b64, ec_key, kid_of, self_signed
from werkzeug.test import EnvironBuilder, run_wsgi_app

from connector.devhub import DevHubConfig, create_app
from connector.devhub.hotpaths import HotPaths

PROFILE = {"user_id": "dana", "email": "dana@example.test", "groups": ["a&b", "<staff>"]}
BROWSER = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
KEY = ec_key()
DER = self_signed(KEY, "hot-agent")


def token(**claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "corp", "aud": "urn:acme", "sub": "host/w1", "iat": now, "exp": now + 120}
    body.update(jti=secrets.token_urlsafe(16), **claims)
    return jwt.encode(body, KEY, algorithm="ES256", headers={"kid": kid_of(DER)})


def build_environ(method: str, path: str, **options: Any) -> dict[str, Any]:
    """werkzeug's environ for a request (``json_body``: a JSON body)."""
    if "json_body" in options:
        options["data"] = json.dumps(options.pop("json_body"))
        options.setdefault("content_type", "application/json")
    return EnvironBuilder(path=path, method=method, **options).get_environ()


class Hub:
    """One devhub in-process; ``flask_calls`` counts the requests that reached Flask."""

    def __init__(self, config: DevHubConfig, through_hot_paths: bool) -> None:
        self.app = create_app(config)
        hot = self.app.wsgi_app
        assert isinstance(hot, HotPaths)
        self.flask_calls = 0
        flask_app = hot.app

        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            self.flask_calls += 1
            return flask_app(environ, start_response)

        hot.app = counted
        self.entry = self.app if through_hot_paths else counted
        self.state = self.app.extensions["devhub"].state
        status, _, body = self.call("POST", "/tickets/tk", json_body={"certs": [b64(DER)]})
        assert status == "200 OK", body
        self.flask_calls = 0

    def call(self, method: str, path: str, **options: Any) -> tuple[str, list, bytes]:
        environ = build_environ(method, path, **options)
        app_iter, status, headers = run_wsgi_app(self.entry, environ, buffered=True)
        return status, sorted(headers.items()), b"".join(app_iter)

    def events(self) -> dict[str, int]:
        return self.state.counters()["events"]


@pytest.fixture
def hubs() -> Iterator[tuple[Hub, Hub]]:
    config = DevHubConfig(alg="HS256", ticket="tk", signin_wait_seconds=0)
    fast, plain = Hub(config, True), Hub(config, False)
    yield fast, plain
    for hub in (fast, plain):
        hub.state.close()


def both(hubs: tuple[Hub, Hub], method: str, path: str, **options: Any) -> tuple[str, bytes]:
    """The same request to both hubs; the answers must be the same, byte for byte but for
    the times in a JSON body (``serverTime``, ``createdAt``: each hub's own clock)."""
    fast, plain = hubs
    answers = [hub.call(method, path, **options) for hub in (fast, plain)]
    compared = []
    for status, headers, body in answers:
        if dict(headers).get("Content-Type") == "application/json":
            data = json.loads(body)
            timed = {k: data.pop(k) for k in ("serverTime", "createdAt") if k in data}
            if timed:  # then the length may differ too
                headers = [h for h in headers if h[0] != "Content-Length"]
            body = json.dumps(data).encode() + b"".join(b"<time>" for _ in timed)
        compared.append((status, headers, body))
    assert compared[0] == compared[1]
    return answers[0][0], answers[0][2]


def relay(hubs, ref: str, wctx: str = "w1", **options: Any) -> tuple[str, bytes]:
    item = {"ref": ref, "wctx": wctx, "profile": PROFILE, "method": "form"}
    headers = {"Authorization": f"Bearer {token()}", "X-Connector-Protocol": "2"}
    if "data" not in options:
        options.setdefault("json_body", {"signins": [item]})
    headers.update(options.pop("headers", {}))
    return both(hubs, "POST", "/tenants/acme/agent/signins", headers=headers, **options)


def callback(hubs, ref: str, wctx: str = "w1", accept: str = BROWSER) -> tuple[str, bytes]:
    query = {"ref": ref, "wctx": wctx}
    return both(
        hubs, "GET", "/tenants/acme/login/callback", query_string=query, headers={"Accept": accept}
    )


def test_a_relay_and_its_callback_are_served_before_flask_with_flasks_answers(hubs):
    fast, plain = hubs
    refs = [secrets.token_urlsafe(24) for _ in range(3)]
    for ref in refs:
        assert relay(hubs, ref) == ("200 OK", f'{{"acked":["{ref}"]}}\n'.encode())
    pages = [callback(hubs, ref) for ref in refs]
    for status, page in pages:
        assert status == "200 OK" and b"dana@example.test" in page
        assert b"<li>a&amp;b</li><li>&lt;staff&gt;</li>" in page
    # the first page renders its frame in Flask; the rest never reach it
    assert (fast.flask_calls, plain.flask_calls) == (1, 6)
    assert fast.events() == plain.events()
    assert fast.events()["sessionsRedeemed"] == 3


def test_refused_refs_get_flasks_pages_from_the_outcome_the_hot_path_got(hubs):
    fast, plain = hubs
    ref, other, old = (secrets.token_urlsafe(24) for _ in range(3))
    relay(hubs, ref)
    relay(hubs, other)
    assert callback(hubs, ref)[0] == "200 OK"
    for status, page in (
        callback(hubs, ref),  # replayed
        callback(hubs, other, wctx="w2"),  # another wctx
        callback(hubs, secrets.token_urlsafe(24)),  # unknown after the (zero) wait
        callback(hubs, "short"),  # malformed
    ):
        assert status == "400 BAD REQUEST" and b"Sign-in failed" in page
    relay(hubs, old)
    for hub in hubs:
        hub.state.set_clock_offset(300)  # past 120 s, within the memory
    assert b"expired" in callback(hubs, old)[1]
    # each refused ref was redeemed once, by the hot path, never again by Flask
    assert fast.events() == plain.events()
    events = fast.events()
    assert (events["sessionsReplayed"], events["sessionsWrongWctx"]) == (1, 1)
    assert (events["sessionsUnknown"], events["sessionsExpired"]) == (1, 1)


def test_a_callback_asking_for_json_gets_flasks_json(hubs):
    ref = secrets.token_urlsafe(24)
    relay(hubs, ref, wctx="wj")
    status, body = callback(hubs, ref, wctx="wj", accept="application/json")
    assert status == "200 OK"
    assert json.loads(body)["profile"] == PROFILE and "ref" not in json.loads(body)
    status, body = callback(hubs, ref, wctx="wj", accept="application/*")
    assert status == "400 BAD REQUEST" and json.loads(body)["problem"] == "redeemed"


@pytest.mark.parametrize(
    ("case", "options", "status"),
    [
        ("no protocol header", {"headers": {"X-Connector-Protocol": ""}}, "400 BAD REQUEST"),
        ("protocol 1", {"headers": {"X-Connector-Protocol": "1"}}, "400 BAD REQUEST"),
        ("no token", {"headers": {"Authorization": ""}}, "401 UNAUTHORIZED"),
        ("bad token", {"headers": {"Authorization": "Bearer a.b.c"}}, "401 UNAUTHORIZED"),
        ("not JSON", {"data": b"{", "content_type": "application/json"}, "400 BAD REQUEST"),
        ("form body", {"data": b"signins=1", "content_type": "text/plain"}, "400 BAD REQUEST"),
        ("not an object", {"json_body": [1]}, "400 BAD REQUEST"),
        ("empty batch", {"json_body": {"signins": []}}, "400 BAD REQUEST"),
        ("bad item", {"json_body": {"signins": [{"ref": "x"}]}}, "400 BAD REQUEST"),
    ],
)
def test_a_refused_relay_is_refused_by_flask_as_before(hubs, case, options, status):
    fast, plain = hubs
    got, body = relay(hubs, secrets.token_urlsafe(24), **options)
    assert got == status, (case, body)
    assert fast.events() == plain.events()
    assert fast.state.sessions() == plain.state.sessions() == []


def test_a_replayed_token_and_a_pending_fault_are_left_to_flask(hubs):
    fast, plain = hubs
    item = {"ref": secrets.token_urlsafe(24), "wctx": "", "profile": {}, "method": "kerberos"}
    headers = {"Authorization": f"Bearer {token()}", "X-Connector-Protocol": "2"}
    for expected in ("200 OK", "401 UNAUTHORIZED"):  # the same token twice: a replay
        status, _ = both(
            hubs,
            "POST",
            "/tenants/acme/agent/signins",
            headers=headers,
            json_body={"signins": [item]},
        )
        assert status == expected
    for hub in hubs:
        hub.call("POST", "/tenants/acme/api/faults", json_body={"status": 503, "count": 1})
        poll_fault = {"status": 500, "count": 1, "endpoint": "poll"}
        hub.call("POST", "/tenants/acme/api/faults", json_body=poll_fault)
    calls = fast.flask_calls
    assert relay(hubs, secrets.token_urlsafe(24))[0] == "503 SERVICE UNAVAILABLE"
    assert fast.flask_calls == calls + 1  # the fault is Flask's to apply
    assert relay(hubs, secrets.token_urlsafe(24))[0] == "200 OK"
    assert fast.flask_calls == calls + 1  # a fault for polls leaves the relay to the hot path
    assert fast.events() == plain.events()
    assert fast.events()["faultsInjected"] == 1


@pytest.mark.parametrize(
    "groups",
    [["a&b", "<x>", "q\"'"], ["a\x00b", "<c>"], [1, "<"], ["only"], [None, {"k": "<v>"}]],
)
def test_the_pages_groups_are_escaped_as_one_by_one(groups):
    """The page escapes string groups in one call over their NUL-joined text; a NUL inside a
    group or a group that is not a string is escaped on its own: the same text either way."""
    from markupsafe import escape

    from connector.devhub.pages import signed_in_page

    redeemed = {"profile": {"groups": groups}, "method": "form", "wctx": "", "agent": "a"}
    page = signed_in_page(("", ""), redeemed)
    expected = "<li>" + "</li><li>".join(str(escape(g)) for g in groups) + "</li>"
    assert expected in page


# ---- serve_now: what an event-loop server answers without waiting --------------------------


def serve_now(hub: Hub, method: str, path: str, **options: Any) -> tuple[str, bytes] | None:
    """``HotPaths.serve_now`` on ``hub``: its answer, or None (nothing answered)."""
    hot = hub.app.wsgi_app
    assert isinstance(hot, HotPaths)
    environ = build_environ(method, path, **options)
    started: list[str] = []
    result = hot.serve_now(environ, lambda status, headers, exc_info=None: started.append(status))
    return None if result is None else (started[0], b"".join(result))


@pytest.fixture
def waiting_hub() -> Iterator[Hub]:
    """A hub whose callbacks wait 5 s for a ref not relayed yet."""
    hub = Hub(DevHubConfig(alg="HS256", ticket="tk", signin_wait_seconds=5), True)
    yield hub
    hub.state.close()


def relay_now(hub: Hub, ref: str, bearer: str | None = None) -> tuple[str, bytes] | None:
    item = {"ref": ref, "wctx": "w1", "profile": PROFILE, "method": "form"}
    headers = {"Authorization": f"Bearer {bearer or token()}", "X-Connector-Protocol": "2"}
    return serve_now(
        hub, "POST", "/tenants/acme/agent/signins", headers=headers, json_body={"signins": [item]}
    )


def callback_now(hub: Hub, ref: str, wctx: str = "w1") -> tuple[str, bytes] | None:
    query = {"ref": ref, "wctx": wctx}
    return serve_now(
        hub, "GET", "/tenants/acme/login/callback", query_string=query, headers={"Accept": BROWSER}
    )


def test_serve_now_leaves_a_callback_that_would_wait_untouched(waiting_hub):
    hub = waiting_hub
    ref = secrets.token_urlsafe(24)
    before = dict(hub.events())
    started = time.monotonic()
    assert callback_now(hub, ref) is None
    assert time.monotonic() - started < 1  # it did not wait its 5 s
    assert hub.events() == before  # no wait counted, the ref not spent
    assert relay_now(hub, ref) == ("200 OK", f'{{"acked":["{ref}"]}}\n'.encode())
    status, page = callback_now(hub, ref) or ("", b"")
    assert status == "200 OK" and b"dana@example.test" in page
    assert callback_now(hub, ref)[0] == "400 BAD REQUEST"  # type: ignore[index]  # spent now
    assert hub.events()["sessionsRedeemed"] == 1 and hub.events()["sessionsReplayed"] == 1


def test_serve_now_answers_a_refused_callback_at_once(waiting_hub):
    assert callback_now(waiting_hub, "not a ref")[0] == "400 BAD REQUEST"  # type: ignore[index]
    ref = secrets.token_urlsafe(24)
    relay_now(waiting_hub, ref)
    assert callback_now(waiting_hub, ref, wctx="other")[0] == "400 BAD REQUEST"  # type: ignore[index]
    assert waiting_hub.events()["sessionsWrongWctx"] == 1


def test_serve_now_leaves_a_relay_flask_would_answer_untouched(waiting_hub):
    hub = waiting_hub
    ref = secrets.token_urlsafe(24)
    hub.call("POST", "/tenants/acme/api/faults", json_body={"delay": 0.2, "count": 1})
    bearer = token()
    calls = hub.flask_calls
    assert relay_now(hub, ref, bearer) is None  # a fault pending: Flask (and its sleep) decide
    assert relay_now(hub, ref, "not.a.token") is None  # a refusal: Flask's to give
    assert hub.flask_calls == calls  # nothing reached Flask
    assert hub.events().get("signinsReceived", 0) == 0
    assert hub.state.has_fault("signins")  # the fault is still there
    status, _, _ = hub.call(  # the same token again, through the app: it was not used up
        "POST",
        "/tenants/acme/agent/signins",
        headers={"Authorization": f"Bearer {bearer}", "X-Connector-Protocol": "2"},
        json_body={"signins": [{"ref": ref, "wctx": "w1", "profile": PROFILE, "method": "form"}]},
    )
    assert status == "200 OK"
    assert hub.events()["faultsInjected"] == 1 and hub.events()["signinsReceived"] == 1


def test_serve_now_leaves_a_callback_whose_query_is_not_utf8_to_the_app(waiting_hub):
    """Flask decodes such a query its own way and may then wait for the ref: not on the loop
    (here the ref was relayed: Flask would have redeemed it)."""
    ref = secrets.token_urlsafe(24)
    relay_now(waiting_hub, ref)
    environ = EnvironBuilder(
        path="/tenants/acme/login/callback", headers={"Accept": BROWSER}
    ).get_environ()
    environ["QUERY_STRING"] = f"ref={ref}&wctx=w\xff"  # a raw byte 0xFF: not UTF-8
    hot = waiting_hub.app.wsgi_app
    assert isinstance(hot, HotPaths)
    assert hot.serve_now(environ, lambda *a: None) is None
    assert waiting_hub.flask_calls == 0
    assert "sessionsRedeemed" not in waiting_hub.events()  # the ref is still unspent
    assert callback_now(waiting_hub, ref)[0] == "200 OK"  # type: ignore[index]


def test_serve_now_leaves_every_other_request_to_the_app(waiting_hub):
    assert serve_now(waiting_hub, "GET", "/tenants/acme/api/state") is None
    assert serve_now(waiting_hub, "HEAD", "/tenants/acme/login/callback") is None
    assert waiting_hub.flask_calls == 0
