"""The connector's gunicorn logger writes the same access line as gunicorn's, cheaper."""

from __future__ import annotations

import datetime
import types

from gunicorn.config import Config
from gunicorn.glogging import Logger, SafeAtoms

from connector.accesslog import ACCESS_LOG_FORMAT, AccessLogger


def _request() -> tuple[object, object, dict[str, str], datetime.timedelta]:
    resp = types.SimpleNamespace(status="303 See Other", sent=0, headers=[("Location", "x")])
    req = types.SimpleNamespace(headers=[("HOST", "c"), ("USER-AGENT", 'a "b"')])
    environ = {
        "REMOTE_ADDR": "10.0.0.7",
        "REQUEST_METHOD": "POST",
        "RAW_URI": '/wsfed?wctx="x"',
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    return resp, req, environ, datetime.timedelta(seconds=1, microseconds=234567)


def _line(logger_cls: type[Logger], fmt: str) -> str:
    cfg = Config()
    cfg.set("access_log_format", fmt)
    logger = logger_cls(cfg)
    return fmt % SafeAtoms(logger.atoms(*_request()))


def test_the_shipped_format_gives_gunicorns_line():
    ours = _line(AccessLogger, ACCESS_LOG_FORMAT)
    assert ours == _line(Logger, ACCESS_LOG_FORMAT)
    assert ours == '10.0.0.7 "POST /wsfed?wctx=\\"x\\" HTTP/1.1" 303 0 1234ms'


def test_another_format_gets_every_atom():
    fmt = '%(h)s %(s)s "%({user-agent}i)s" %({host}i)s'
    assert _line(AccessLogger, fmt) == _line(Logger, fmt) == '10.0.0.7 303 "a \\"b\\"" c'
