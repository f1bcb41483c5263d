"""The sign-in endpoint's own HTTP pieces against Werkzeug's: the reader of a browser's form
post (``request.form``) and the hand-off's 303 (``redirect``)."""

import io
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app
from werkzeug.utils import redirect
from werkzeug.wrappers import Request

from connector.web.signin import URLENCODED, SeeOther, _return_uri, read_urlencoded

BODIES = [
    b"csrf_token=abc&username=alice&password=s3cret&wctx=ctx-1&wtrealm=urn%3Aapp&wreply=",
    b"username=al+ice&password=p%40ss+w%C3%B6rd%21&wctx=%2F%3F%26%3D",
    b"username=first&username=second&password=x",  # the first value, as MultiDict.get
    b"username=%FF%FEbad&password=%C3%28",  # percent-escapes that are not UTF-8
    b"username&password=&=novalue&&wctx=a;b",  # no '=', empty name, ';' is not a separator
    "username=jürgen&password=ü".encode(),  # raw UTF-8 in the body
    b"",
]


def environ(body, content_type=URLENCODED, length=None):
    env = EnvironBuilder(method="POST", path="/wsfed", data=body).get_environ()
    env["CONTENT_TYPE"] = content_type
    env["CONTENT_LENGTH"] = str(len(body) if length is None else length)
    env["wsgi.input"] = io.BytesIO(body)
    return env


def werkzeug_form(env):
    return werkzeug_form_of(Request(env))


@pytest.mark.parametrize("limit", [64 * 1024, None])
@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_reads_what_request_form_reads(body, limit):
    env = environ(body)
    ours = read_urlencoded(env, limit)
    assert ours == werkzeug_form(environ(body))
    assert env["wsgi.input"].read() == body  # put back for whoever reads it next


@pytest.mark.parametrize(
    ("body", "content_type", "length", "limit"),
    [
        (b"username=a", "multipart/form-data; boundary=x", None, 1024),  # another type
        (b"username=a", URLENCODED + "; charset=UTF-8", None, 1024),  # parameters
        (b"username=" + b"a" * 100, URLENCODED, None, 50),  # over the limit: 413 there
        (b"username=a", URLENCODED, 40, 1024),  # shorter than announced: 400 there
        (b"username=\xff\xfe", URLENCODED, None, 1024),  # not UTF-8: an empty form there
        (b"username=a", URLENCODED, "ten", 1024),  # no number
        (b"username=a", URLENCODED, -1, None),  # a negative length, no limit set
    ],
)
def test_leaves_everything_else_to_request_form(body, content_type, length, limit):
    env = environ(body, content_type, length)
    assert read_urlencoded(env, limit) is None
    # request.form, which answers then, answers as it would have without this reader
    assert outcome(env, limit) == outcome(environ(body, content_type, length), limit)


def outcome(env, limit):
    """What request.form gives (its fields) or raises (the exception's type)."""
    request = Request(env)
    request.max_content_length = limit
    try:
        return werkzeug_form_of(request)
    except Exception as exc:  # the exception is the outcome compared
        return type(exc)


def werkzeug_form_of(request):
    form = request.form
    return {name: form.get(name) for name in form}


TARGETS = [
    "https://hub.example/login/callback",
    "https://hub.example/cb?x=1&y=",
    "https://hub.example/cb?",
    "https://hüb.example/pä th?q=ü v#frag ment",
    "http://127.0.0.1:8080/a/b?c=d#x",
    "https://h/cb?a=1;b=2",
    "https://h/cb?a=%20b+c",
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("wctx", "ref"), [("ctx-1", "r1"), ("a b&c=d/é#?", "xyz_-")])
def test_the_303_goes_where_werkzeugs_redirect_sent_it(target, wctx, ref):
    parts = urlsplit(target)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("wctx", wctx), ("ref", ref)]
    theirs = redirect(urlunsplit(parts._replace(query=urlencode(query))), code=303)
    head, fragment = _return_uri(target)
    ours = SeeOther(head + urlencode((("wctx", wctx), ("ref", ref))) + fragment)
    env = EnvironBuilder(method="POST", path="/wsfed").get_environ()
    _, status, headers = run_wsgi_app(theirs, env)
    body, our_status, our_headers = run_wsgi_app(ours, env)
    assert our_status == status == "303 SEE OTHER"
    assert our_headers["Location"] == headers["Location"]
    assert b"".join(body) == b""
    assert our_headers["Content-Length"] == "0"
