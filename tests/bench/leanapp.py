"""The lean reference sign-in -- NOT the product: how far down the stack itself goes.

A Flask view under gunicorn (2 x 8 gthread, like the connector) doing only what a form sign-in
must: the CSRF check, search, bind, group walk, queueing the profile (an in-process queue that
nothing sends) and the 303; python-ldap directly on per-thread pooled StartTLS connections.
Configured from ``BENCH_LEAN_CONFIG`` (JSON); started by :class:`lean.LeanReference`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import secrets
import threading
from typing import Any
from urllib.parse import urlencode

import ldap
from baselines import connect, member_walk
from flask import Flask, Response, request
from ldap.filter import escape_filter_chars

CFG = json.loads(os.environ["BENCH_LEAN_CONFIG"])
KEY = CFG["csrf_key"].encode()
app = Flask(__name__)
profiles: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
local = threading.local()


def conns() -> tuple[Any, Any]:
    """This thread's (service search, user bind) connections, opened on first use."""
    if not hasattr(local, "pair"):
        search, binder = connect(CFG["uri"], CFG["ca_file"]), connect(CFG["uri"], CFG["ca_file"])
        search.simple_bind_s(CFG["bind_dn"], CFG["bind_pw"])
        local.pair = (search, binder)
    return local.pair  # type: ignore[no-any-return]


def token(cookie: str) -> str:
    return hmac.new(KEY, cookie.encode(), hashlib.sha256).hexdigest()


@app.get("/wsfed")
def form() -> Response:
    cookie = secrets.token_urlsafe(24)
    resp = Response(f'<input name="csrf_token" value="{token(cookie)}">')
    resp.set_cookie("connector_csrf", cookie, httponly=True, samesite="Lax")
    return resp


@app.post("/wsfed")
def signin() -> Response:
    f = request.form
    if not hmac.compare_digest(token(request.cookies.get("connector_csrf", "")), f["csrf_token"]):
        return Response("CSRF", 400)
    search, binder = conns()
    uid = escape_filter_chars(f["username"])
    found = search.search_ext_s(
        CFG["people"], ldap.SCOPE_SUBTREE, f"(uid={uid})", ["*"], sizelimit=2
    )
    if len(found) != 1:
        return Response("unknown user", 401)
    dn, attrs = found[0]
    try:
        binder.simple_bind_s(dn, f["password"])
    except ldap.INVALID_CREDENTIALS:
        return Response("wrong password", 401)
    groups = member_walk(search, CFG["groups"], dn)
    ref = secrets.token_urlsafe(16)
    profile = {k: [v.decode(errors="replace") for v in vs] for k, vs in attrs.items()}
    profiles.put({"ref": ref, "wctx": f["wctx"], "profile": {**profile, "groups": groups}})
    query = urlencode({"wctx": f["wctx"], "ref": ref})
    return Response(status=303, headers={"Location": f"{CFG['post_token_url']}?{query}"})
