"""The sign-in form's own reader of a browser's form post against Werkzeug's ``request.form``."""

import io

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from connector.web.signin import URLENCODED, read_urlencoded

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


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_reads_what_request_form_reads(body):
    env = environ(body)
    ours = read_urlencoded(env, 64 * 1024)
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
