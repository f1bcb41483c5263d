"""The console's thin views, one module per page group; importing this registers them all."""

from connector.web.console.views import access, archive, auth, setup, status, users

__all__ = ["access", "archive", "auth", "setup", "status", "users"]
