"""gunicorn hooks for the lean reference (NOT the product): each worker on a CPU of its own,
as the connector's workers are by default (``WEB_CPU_AFFINITY``, :mod:`connector.affinity`),
so that the reference and the product run on the same stack; ``WEB_CPU_AFFINITY=false`` in
the bench's environment turns it off for both."""

import os
from typing import Any

from connector import affinity

_OFF = ("false", "0", "no", "off", "")
_ON = os.environ.get("WEB_CPU_AFFINITY", "true").strip().lower() not in _OFF


def pre_fork(server: Any, worker: Any) -> None:
    if _ON:
        affinity.assign(worker, server.WORKERS.values())


def post_fork(server: Any, worker: Any) -> None:
    affinity.pin(worker)
