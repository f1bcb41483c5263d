"""The devhub's Flask app for gunicorn (``hubapp:app``), configured from ``BENCH_HUB_*``.

Since stop 21 the bench serves the devhub with ``hubserver.py``; ``--hub-server gevent`` (and
``hubcost.py gunicorn``) serve it as before, with gunicorn (one process: the hub's state lives in
memory; gevent's WSGI server, or gthread without gevent; HTTP/1.1 keep-alive; the settings are
``fasthub.HUB_WORKER`` and the others there) instead of werkzeug's development server, so that
the hub, which in production runs elsewhere, is not what limits the connector on a 2-core
machine. The protocol code is the devhub's own (``connector.devhub.app.create_app``, with
the relay and the callback served in front of Flask by ``connector.devhub.hotpaths``);
``hubcost.py`` measures its CPU per browser sign-in alone.
"""

from __future__ import annotations

import json
import os

from connector.devhub.app import create_app
from connector.devhub.config import DevHubConfig

_cfg = json.loads(os.environ["BENCH_HUB_CONFIG"])
_cfg["ip_ranges"] = tuple(_cfg.get("ip_ranges", ()))
app = create_app(DevHubConfig(**_cfg))
