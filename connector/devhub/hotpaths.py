"""The devhub's two requests per browser sign-in, served in front of Flask (plain WSGI).

Every browser sign-in costs the hub two requests: the agent's relay ``POST {adHub}/agent/
signins`` (protocol §5.2) and the browser's ``GET {adHub}/login/callback`` (the realm's
``postTokenUrl``, §5.3). :class:`HotPaths` wraps the Flask app's ``wsgi_app`` and serves
their common case itself — no request or app context, no session, no URL routing, no
response object — with the same checks, the same state calls and byte-for-byte the same
answers (``tests/devhub/test_devhub_hotpaths.py`` compares the two). Everything else goes to
Flask untouched:

* any other path or method (a ``HEAD``, a trailing slash, another tenant);
* a relay while an injected fault for it is pending (Flask applies it), without the protocol
  header, with a body that is not a JSON object within ``MAX_CONTENT_LENGTH`` of
  ``Content-Type: application/json``, or that fails a check: Flask checks it again from the
  start and refuses it, because this layer decides *before* its first side effect
  (the ``jti`` is recorded only after the token, the body and every item passed, so Flask's
  order of checks — protocol, token, ``jti``, body — gives the same answer);
* a callback whose page this layer does not build (JSON, a refused ``ref``, a frame not
  rendered yet): it has redeemed the ``ref`` already, so it hands Flask the outcome under
  :data:`connector.devhub.pages.CALLBACK_OUTCOME` and Flask renders it, redeeming nothing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401 - registers the "werkzeug.url_quote" codec error handler

from connector.devhub.channel import (
    MAX_SIGNINS,
    PROTOCOL_VERSION,
    agent_claims,
    parse_batch,
    parse_signin,
    relay_signins,
)
from connector.devhub.pages import (
    CALLBACK_OUTCOME,
    cached_frame,
    redeem,
    signed_in_page,
    wants_json,
)
from connector.devhub.tokens import AgentTokenError
from connector.devhub.web import ApiError, DevHub

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_NO_STORE = ("Cache-Control", "no-store")
_HTML = ("Content-Type", "text/html; charset=utf-8")
_JSON = ("Content-Type", "application/json")


def _json_mimetype(content_type: str) -> bool:
    """Whether Flask's ``request.is_json`` holds for this ``Content-Type``."""
    mimetype = content_type.partition(";")[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def query_args(environ: dict[str, Any]) -> dict[str, str]:
    """The query's parameters, the first value of each, decoded as werkzeug decodes
    ``request.args``.

    Raises:
        UnicodeDecodeError: the query is not UTF-8 (werkzeug fails on it too).
    """
    query = environ.get("QUERY_STRING", "").encode("latin-1").decode()
    args: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote"):
        args.setdefault(key, value)
    return args


class HotPaths:
    """WSGI middleware: the relay and the callback of one devhub, the rest to ``app``."""

    def __init__(self, app: WSGIApp, hub: DevHub, max_body: int) -> None:
        self.app = app  #: the wrapped app (Flask's ``wsgi_app``)
        self._hub = hub
        self._max_body = max_body
        prefix = f"/tenants/{hub.config.tenant}"
        self._relay_path = f"{prefix}/agent/signins"
        self._callback_path = f"{prefix}/login/callback"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        method = environ.get("REQUEST_METHOD")
        answer: Iterable[bytes] | None = None
        if path == self._callback_path and method == "GET":
            answer = self._callback(environ, start_response, blocking=True)
        elif path == self._relay_path and method == "POST":
            answer = self._relay(environ, start_response)
        return self.app(environ, start_response) if answer is None else answer  # None: Flask's

    def serve_now(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """The answer to ``environ`` if it is one this layer gives without waiting, else None
        with nothing changed (serve it with ``self`` where a wait can be afforded): for an
        event-loop server (``tests/bench/hubserver.py``). A relay answered here, or a callback
        whose ``ref`` was relayed already (or is refused at once); not a relay that Flask
        would take (an injected fault may sleep there), nor a callback that would wait."""
        path = environ.get("PATH_INFO")
        method = environ.get("REQUEST_METHOD")
        if path == self._callback_path and method == "GET":
            return self._callback(environ, start_response, blocking=False)
        if path == self._relay_path and method == "POST":
            return self._relay(environ, start_response)
        return None

    # ---- POST agent/signins ----------------------------------------------------------------

    def _body(self, environ: dict[str, Any]) -> bytes | None:
        """The request body if it is JSON within the size limit (then also put back as
        ``wsgi.input`` for Flask), else None with nothing read."""
        if not _json_mimetype(environ.get("CONTENT_TYPE", "")):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 <= length <= self._max_body:
            return None
        body: bytes = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    def _relay(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """The relay's answer, or None for Flask to answer it (nothing changed, the body put
        back)."""
        hub = self._hub
        if (
            hub.state.has_fault("signins")
            or environ.get("HTTP_X_CONNECTOR_PROTOCOL") != PROTOCOL_VERSION
        ):
            return None
        body = self._body(environ)
        if body is None:
            return None
        try:
            claims = agent_claims(hub, environ.get("HTTP_AUTHORIZATION", ""))
            data = json.loads(body)
            if not isinstance(data, dict):
                return None
            parsed = parse_batch(data, "signins", MAX_SIGNINS, parse_signin)
        except (AgentTokenError, ApiError, ValueError):  # JSON and decoding errors: ValueError
            return None
        if not hub.state.use_jti(claims.jti, claims.exp):
            return None  # Flask refuses the replay (401)
        acked = relay_signins(hub, claims.sub, parsed)
        # as Flask's JSON provider writes it (compact, a final newline); a ref is base64url
        # (parse_signin checked it), so it is its own JSON text between quotes
        answer = '{"acked":["' + '","'.join(acked) + '"]}\n'
        return self._answer(start_response, _JSON, answer.encode())

    # ---- GET login/callback ----------------------------------------------------------------

    def _callback(
        self, environ: dict[str, Any], start_response: StartResponse, blocking: bool
    ) -> Iterable[bytes] | None:
        """The callback's answer, or None for Flask to answer it, nothing changed: a query
        that is not UTF-8 (Flask decodes it its own way, and may wait), or with
        ``blocking=False`` a ``ref`` that would be waited for."""
        try:
            args = query_args(environ)
        except UnicodeDecodeError:
            return None
        hub = self._hub
        client = environ.get("REMOTE_ADDR") or ""
        ref, wctx = args.get("ref", ""), args.get("wctx", "")
        outcome = redeem(hub, ref, wctx, client, blocking=blocking)
        if outcome is None:
            return None
        frame = cached_frame(environ.get("SCRIPT_NAME", ""), hub.config.tenant)
        if (
            isinstance(outcome, dict)
            and frame is not None
            and not wants_json(environ.get("HTTP_ACCEPT", ""))
        ):
            page = signed_in_page(frame, outcome).encode()
            return self._answer(start_response, _HTML, page)
        environ[CALLBACK_OUTCOME] = outcome
        return self.app(environ, start_response)

    @staticmethod
    def _answer(
        start_response: StartResponse, content_type: tuple[str, str], body: bytes
    ) -> list[bytes]:
        headers = [content_type, ("Content-Length", str(len(body))), _NO_STORE]
        start_response("200 OK", headers)
        return [body]
