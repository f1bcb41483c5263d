"""devhub: the reference hub of the channel protocol v2, for the demo and the tests.

A tool, not the product: nothing the connector runs imports it (tests/test_imports.py); a
real hub implements docs/protocol.md on its own.

``create_app(DevHubConfig(...))`` builds the Flask app (see :mod:`connector.devhub.app` for
its routes); ``python -m connector.devhub.server`` (or ``connector devhub``) serves it.
"""

from connector.devhub.app import create_app
from connector.devhub.config import DevHubConfig

__all__ = ["DevHubConfig", "create_app"]
