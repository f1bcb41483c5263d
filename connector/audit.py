"""The audit trail: one line per login and per password change, on the ``connector.audit`` logger.

Every way in writes the same line through :func:`record` (the sign-in page, Kerberos, the
console's "try a login", the hub's commands, the password change step)::

    login method=form user='alice' outcome=success client=192.0.2.7 correlation=3f9c…
    password_change method=hub:self user='bob' outcome=WrongPassword correlation=p-1 \
        command=c-7 ms=3.1

with the same fields as ``extra`` for JSON logs (``method``, ``user``, ``outcome``,
``client``, ``correlation_id``, ``principal``). Never a password, a ticket or a header.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


def record(
    event: str,
    method: str,
    user: str | None,
    outcome: str,
    correlation: str | None,
    *,
    client: Any = None,
    principal: str | None = None,
    command: str | None = None,
    ms: float | None = None,
) -> None:
    """Write one audit line: ``event`` (``login``, ``password_change``) by ``method``.

    ``client`` (the client's address) is left out when there is none (a hub command), and
    ``principal`` (a Kerberos ticket's) when it is None; a hub command's line names the
    command and how long it took (``command``, ``ms``): it is that command's only line.
    """
    if not log.isEnabledFor(logging.INFO):
        return
    # the text made here, once (a record with arguments formats them again in each handler)
    text = f"{event} method={method} user={user!r} outcome={outcome}"
    extra: dict[str, Any] = {"method": method, "user": user, "outcome": outcome}
    if client is not None:
        client = str(client)  # once: an address's str() costs more than the rest of a field
        text += f" client={client}"
        extra["client"] = client
    text += f" correlation={correlation}"
    extra["correlation_id"] = correlation
    if principal is not None:
        text += f" principal={principal!r}"
        extra["principal"] = principal
    if command is not None:
        text += f" command={command} ms={ms or 0.0:.1f}"
        extra["command_id"] = command
        extra["ms"] = ms
    # what Logger.info would do, less its search of the stack for the caller: the caller is
    # this line, known (a sixth of a line's cost); handlers, filters and factory as before
    line = sys._getframe().f_lineno + 1
    log.handle(log.makeRecord(log.name, logging.INFO, _FILE, line, text, (), None, "record", extra))


_FILE = record.__code__.co_filename
