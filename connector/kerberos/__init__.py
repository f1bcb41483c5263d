"""Kerberos sign-in: the ``Negotiate`` header, the acceptor, keytabs and the PAC.

* :mod:`~connector.kerberos.negotiate`: the ``Authorization: Negotiate`` header and principal
  names (pure text);
* :mod:`~connector.kerberos.acceptor`: :class:`KerberosAcceptor`, one GSSAPI accept step
  against the keytab (python-gssapi's public API only, MIT's SPNEGO);
* :mod:`~connector.kerberos.tokens`: what the acceptor reads from token bytes alone (SPNEGO
  framing, NTLM, a KRB-ERROR's code);
* :mod:`~connector.kerberos.keytab`: the principals a keytab holds;
* :mod:`~connector.kerberos.pac`: the PAC's logon information (group SIDs).
"""

from connector.errors import KerberosRejected, KeytabError
from connector.kerberos.acceptor import AcceptResult, KerberosAcceptor
from connector.kerberos.keytab import read_keytab_principals
from connector.kerberos.negotiate import (
    MAX_HEADER_LENGTH,
    PrincipalMapping,
    decode_negotiate_header,
    map_principal,
    split_principal,
)
from connector.kerberos.tokens import is_ntlm_token

__all__ = [
    "MAX_HEADER_LENGTH",
    "AcceptResult",
    "KerberosAcceptor",
    "KerberosRejected",
    "KeytabError",
    "PrincipalMapping",
    "decode_negotiate_header",
    "is_ntlm_token",
    "map_principal",
    "read_keytab_principals",
    "split_principal",
]
