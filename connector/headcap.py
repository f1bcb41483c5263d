"""A cap on a whole request head, for gunicorn: what Kerberos needs, not 100 fields of 128 KB.

gunicorn bounds each header field (``limit_request_field_size``, 128 KB here so that a
Kerberos token over the app's 64 KB limit still reaches it and gets a reason) and the number of
fields (``limit_request_fields``), and reads a head of up to their product before parsing it:
100 fields of 128 KB, 12.8 MB, per request. :func:`cap_request_head` makes its HTTP/1 parser
stop reading at :data:`MAX_REQUEST_HEAD` bytes (one large field plus 64 KB for the rest) and
answer 431. Installed in each worker after the fork (``post_fork``).

gunicorn has no setting for this: the cap subclasses its request message (``mesg_class`` of
``gunicorn.http.parser.RequestParser``) and lowers the ``max_buffer_headers`` it computes from
those two limits before it parses. If a gunicorn release changes that shape, the cap is not
installed and the worker says so in the log; ``tests/hostile/test_hostile_limits.py`` fails.
"""

from __future__ import annotations

from typing import Any

#: The largest request head (header fields, after the request line) a worker reads.
MAX_REQUEST_HEAD = 128 * 1024 + 64 * 1024


def cap_request_head(limit: int = MAX_REQUEST_HEAD) -> bool:
    """Make gunicorn's HTTP/1 parser refuse (431) a head over ``limit`` bytes; False if not.

    Idempotent: a reload that calls it again keeps the one cap.
    """
    from gunicorn.http import parser  # type: ignore[import-untyped]
    from gunicorn.http.message import Request  # type: ignore[import-untyped]

    base = getattr(parser.RequestParser, "mesg_class", None)
    if not (isinstance(base, type) and issubclass(base, Request)):
        return False
    if getattr(base, "head_limit", None) == limit:
        return True  # already installed (a reload)

    class CappedRequest(base):  # type: ignore[misc, valid-type]
        head_limit = limit

        def parse(self, unreader: Any) -> Any:
            current = getattr(self, "max_buffer_headers", None)
            if isinstance(current, int):
                self.max_buffer_headers = min(current, limit)
            return super().parse(unreader)

    parser.RequestParser.mesg_class = CappedRequest
    return True
