"""gunicorn configuration shipped with the connector.

Run: ``CONNECTOR_CONFIG=/var/lib/connector/config.json gunicorn -c deploy/gunicorn.conf.py wsgi:app``

Everything is in :mod:`connector.gunicorn_config`; override a setting below if needed, e.g.
``bind = "127.0.0.1:4000"`` behind nginx.
"""

from connector.gunicorn_config import *  # noqa: F403
