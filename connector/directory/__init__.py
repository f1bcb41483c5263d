"""Directory access with python-ldap: the :class:`Directory` service and its parts."""

from connector.directory.service import Directory

__all__ = ["Directory"]
