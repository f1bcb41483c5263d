"""AD/LDAP Connector: bridges an organisation's directory to a cloud identity hub."""

__version__ = "0.1.0"
