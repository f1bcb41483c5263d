"""In-process cost of one Negotiate accept: the connector's KerberosAcceptor against
python-gssapi's bare ``accept_sec_context`` (MIT's SPNEGO), on the same kind of tokens.

A throw-away MIT KDC (tests/servers.py), a TGT for ``bob`` in a ccache, fresh SPNEGO tokens
made by a pyspnego client before each timed round (the service ticket comes from the ccache,
as in the tests' fixtures). The variants run in alternating rounds; the figure is the minimum
over rounds of the mean per token (the machine is shared, the minimum is the least disturbed).
Each variant has its own replay cache, so no token is a replay. Not a test: nothing asserts a
rate. Which ``connector.kerberos`` is measured is the one on ``PYTHONPATH``::

    PYTHONPATH=$PWD:tests python3 tests/bench/accept_cost.py --rounds 15 --tokens 200
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gssapi
import gssapi.raw
import spnego
from servers import MitKdc

SPNEGO_OID = "1.3.6.1.5.5.2"


def _tokens(n: int) -> list[bytes]:
    return [
        spnego.client(hostname="localhost", service="HTTP", protocol="negotiate").step()
        for _ in range(n)
    ]


def _raw_gssapi(keytab: str, rcache: str) -> Callable[[bytes], None]:
    store = {b"keytab": f"FILE:{keytab}".encode(), b"rcache": rcache.encode()}
    mech = gssapi.OID.from_int_seq(SPNEGO_OID)
    creds = gssapi.raw.acquire_cred_from(store, usage="accept", mechs=[mech]).creds

    def run(token: bytes) -> None:
        res = gssapi.raw.accept_sec_context(token, creds)
        if res.more_steps or not res.initiator_name:
            raise RuntimeError("accept did not complete")

    return run


def _acceptor(keytab: str, realm: str, rcache: str) -> Callable[[bytes], None]:
    from connector.kerberos import KerberosAcceptor

    acceptor = KerberosAcceptor(
        keytab, [realm], service_principal="HTTP/localhost", replay_cache=rcache
    )

    def run(token: bytes) -> None:
        if acceptor.accept("Negotiate " + base64.b64encode(token).decode()).username != "bob":
            raise RuntimeError("wrong user")

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--tokens", type=int, default=200, help="tokens per round and variant")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="accept-cost-") as tmp:
        kdc = MitKdc(Path(tmp) / "kdc").start()
        try:
            os.environ.update(kdc.env)
            os.environ["KRB5CCNAME"] = f"FILE:{tmp}/bob.ccache"
            os.environ["KRB5_KTNAME"] = "FILE:/nonexistent/never-used.keytab"
            kdc.kinit("bob", kdc.users["bob"], f"{tmp}/bob.ccache")
            variants = {
                "python-gssapi accept_sec_context (MIT SPNEGO)": _raw_gssapi(
                    kdc.keytab, f"file2:{tmp}/raw.rcache2"
                ),
                "KerberosAcceptor.accept": _acceptor(
                    kdc.keytab, kdc.realm, f"file2:{tmp}/acceptor.rcache2"
                ),
            }
            for run in variants.values():  # warm-up: credentials, libraries
                run(_tokens(1)[0])
            best = dict.fromkeys(variants, float("inf"))
            for _ in range(args.rounds):
                for name, run in variants.items():
                    tokens = _tokens(args.tokens)
                    t0 = time.perf_counter()
                    for token in tokens:
                        run(token)
                    best[name] = min(best[name], (time.perf_counter() - t0) / len(tokens))
        finally:
            kdc.stop()
    print(f"accept cost, min over {args.rounds} rounds of the mean of {args.tokens} tokens:")
    for name, seconds in best.items():
        print(f"  {name:48s} {seconds * 1000:6.3f} ms")


if __name__ == "__main__":
    main()
