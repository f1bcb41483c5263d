"""The baselines measured in the same run: what each kind of login costs with nothing else
around it. Each function returns a :data:`loadgen.Setup` (run in a forked client process).

* :func:`ldap_validate` -- the raw python-ldap sequence a login needs: search the user on a
  service-account connection, bind as the user on a second connection, walk the nested groups
  ``(member=<dn>)`` level by level (OR-batched by 100, as the connector's member walk), all on
  reused StartTLS connections.
  Without a password, the raw profile lookup of a Kerberos sign-in: the same search and
  group walk, no bind (the ticket proved the user).
* :func:`gssapi_accept` -- python-gssapi ``accept_sec_context`` of SPNEGO tokens (MIT's own
  SPNEGO), one acceptor credential per process, a shared replay cache.
* :func:`acceptor_accept` -- the connector's own :class:`KerberosAcceptor` (python-gssapi,
  MIT's SPNEGO) without HTTP, Flask or the directory.

Tokens are made before the timed window by :func:`make_tokens` (a pyspnego client context per
token, service ticket from a ccache: the KDC is not asked per token).
"""

from __future__ import annotations

import base64
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import ldap
from ldap.filter import escape_filter_chars
from loadgen import Setup

_BATCH = 100
SPNEGO_OID = "1.3.6.1.5.5.2"


def connect(uri: str, ca_file: str) -> Any:
    """A StartTLS connection verified against ``ca_file``."""
    conn = ldap.initialize(uri)
    conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    conn.set_option(ldap.OPT_REFERRALS, 0)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, ca_file)
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    conn.start_tls_s()
    return conn


def member_walk(conn: Any, groups_base: str, dn: str, attrs: Sequence[str] = ("cn",)) -> list[str]:
    """Every group ``dn`` is in, through nesting: one search per level (batched)."""
    seen: dict[str, str] = {}
    level = [dn]
    while level:
        found: list[str] = []
        for i in range(0, len(level), _BATCH):
            parts = [f"(member={escape_filter_chars(d)})" for d in level[i : i + _BATCH]]
            flt = parts[0] if len(parts) == 1 else "(|" + "".join(parts) + ")"
            for gdn, _ in conn.search_ext_s(groups_base, ldap.SCOPE_SUBTREE, flt, list(attrs)):
                if gdn is not None and gdn.lower() not in seen:
                    seen[gdn.lower()] = gdn
                    found.append(gdn)
        level = found
    return list(seen.values())


def ldap_validate(
    uri: str,
    ca_file: str,
    bind_dn: str,
    bind_pw: str,
    people_base: str,
    groups_base: str,
    users: Sequence[str],
    password: str | None,
    seed: int,
) -> Setup:
    """The raw validate sequence for ``users`` in a random order per client; with
    ``password`` None, the profile lookup (no bind)."""

    def setup(index: int) -> Callable[[int], float | None]:
        search = connect(uri, ca_file)
        search.simple_bind_s(bind_dn, bind_pw)
        binder = connect(uri, ca_file) if password is not None else None
        order = list(users)
        random.Random(seed * 100 + index).shuffle(order)

        def op(n: int) -> float | None:
            uid = order[n % len(order)]
            found = search.search_ext_s(
                people_base,
                ldap.SCOPE_SUBTREE,
                f"(uid={escape_filter_chars(uid)})",
                ["*", "memberOf"],
                sizelimit=2,
            )
            entries = [dn for dn, _ in found if dn is not None]
            if len(entries) != 1:
                raise RuntimeError(f"{uid}: {len(entries)} entries")
            if binder is not None:
                binder.simple_bind_s(entries[0], password)
            if not member_walk(search, groups_base, entries[0]):
                raise RuntimeError(f"{uid}: no groups")
            return None

        return op

    return setup


def make_tokens(
    n: int, ccaches: Sequence[str], krb5_conf: str, host: str = "localhost"
) -> tuple[list[bytes], float]:
    """``n`` fresh SPNEGO tokens for ``HTTP/host``, round-robin over the users' ccaches, and
    how many per second were made."""
    import spnego

    saved = {k: os.environ.get(k) for k in ("KRB5_CONFIG", "KRB5CCNAME")}
    out: list[bytes] = []
    t0 = time.perf_counter()
    try:
        os.environ["KRB5_CONFIG"] = krb5_conf
        per = -(-n // len(ccaches))
        for cc in ccaches:
            os.environ["KRB5CCNAME"] = cc
            for _ in range(min(per, n - len(out))):
                token = spnego.client(hostname=host, service="HTTP", protocol="negotiate").step()
                if not token:
                    raise RuntimeError("pyspnego made no token")
                out.append(token)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    random.Random(7).shuffle(out)  # users interleaved
    return out, n / (time.perf_counter() - t0)


def gssapi_accept(
    keytab: str, rcache: str, krb5_conf: str, tokens: Sequence[bytes], clients: int
) -> Setup:
    """python-gssapi accepting the tokens (client ``i`` takes every ``clients``-th one)."""

    def setup(index: int) -> Callable[[int], float | None]:
        os.environ["KRB5_CONFIG"] = krb5_conf
        import gssapi
        import gssapi.raw

        store = {b"keytab": f"FILE:{keytab}".encode(), b"rcache": rcache.encode()}
        spnego_mech = gssapi.OID.from_int_seq(SPNEGO_OID)
        creds = gssapi.Credentials(
            base=gssapi.raw.acquire_cred_from(store, usage="accept", mechs=[spnego_mech]).creds
        )
        mine = tokens[index::clients]

        def op(n: int) -> float | None:
            if n >= len(mine):
                raise StopIteration
            ctx = gssapi.SecurityContext(creds=creds, usage="accept")
            ctx.step(mine[n])
            if not ctx.complete or not str(ctx.initiator_name):
                raise RuntimeError("accept did not complete")
            return None

        return op

    return setup


def acceptor_accept(
    keytab: str, rcache: str, krb5_conf: str, realm: str, tokens: Sequence[bytes], clients: int
) -> Setup:
    """The connector's KerberosAcceptor on the same tokens, no HTTP."""

    def setup(index: int) -> Callable[[int], float | None]:
        os.environ["KRB5_CONFIG"] = krb5_conf
        from connector.kerberos import KerberosAcceptor

        acceptor = KerberosAcceptor(
            keytab, [realm], service_principal="HTTP/localhost", replay_cache=rcache
        )
        mine = [b"Negotiate " + base64.b64encode(t) for t in tokens[index::clients]]

        def op(n: int) -> float | None:
            if n >= len(mine):
                raise StopIteration
            acceptor.accept(mine[n].decode())
            return None

        return op

    return setup
