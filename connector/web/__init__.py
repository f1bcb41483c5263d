"""The web app (Flask app factory): sign-in endpoint, health, readiness, metrics, console.

This package's ``__init__`` stays thin: :mod:`connector.services` uses
:mod:`connector.web.guards`, so nothing here imports ``connector.services`` (or a view, which
imports it) at import time; :func:`create_app` imports them when it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask

from connector.logs import add_ring, configure
from connector.settings import Settings, load_settings

if TYPE_CHECKING:
    from connector.services import Services


def create_app(
    settings: Settings | None = None, test_config: dict[str, Any] | None = None
) -> Flask:
    """Build the app; settings come from ``$CONNECTOR_CONFIG`` / ``config.json`` if not given."""
    if settings is None:
        settings = load_settings(require_directory=False)
    if not (test_config or {}).get("TESTING"):
        configure(settings.log_level, settings.log_format)
        add_ring(settings.run_dir / "logs")  # the console's view of every worker's log
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    if test_config:
        app.config.update(test_config)
    from connector.services import Services
    from connector.web import console, health, password_change, signin

    app.extensions["connector"] = Services(settings)

    app.register_blueprint(console.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(signin.bp)
    app.register_blueprint(password_change.bp)
    # a browser's form post is signed in in front of Flask (see SignInHotPath)
    app.wsgi_app = signin.SignInHotPath(app.wsgi_app, app)  # type: ignore[method-assign]
    return app


def services(app: Flask) -> Services:
    """The app's services."""
    found: Services = app.extensions["connector"]
    return found
