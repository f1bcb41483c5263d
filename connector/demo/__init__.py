"""The quick start: ``connector demo`` runs a whole sign-in setup on this machine.

A tool, not the product: nothing the connector runs imports it (tests/test_imports.py).

It starts, as child processes it owns and stops: a sample OpenLDAP directory (own CA,
StartTLS, memberof, four users in groups nested four deep), an MIT KDC for ``DEMO.TEST``
with the same users and ``HTTP/localhost`` in a keytab, the devhub as the hub; then it sets
the connector up from the hub's ticket and serves it under gunicorn. See
:mod:`connector.demo.runner` for the steps and what is printed.

Public API: :class:`DemoOptions`, :func:`run`, :class:`DemoError`, :data:`USERS`.
"""

from connector.demo.directory import USERS, DemoUser
from connector.demo.procs import DemoError
from connector.demo.runner import DemoOptions, run

__all__ = ["USERS", "DemoError", "DemoOptions", "DemoUser", "run"]
