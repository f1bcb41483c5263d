"""Client-certificate sign-in: where the certificate comes from, whether it is good, who it is.

Three steps, each a small piece the web layer calls in turn:

* :func:`presented` finds the certificate of a request: a header set by a proxy in
  ``TRUSTED_PROXIES`` (nginx's URL-escaped PEM ``$ssl_client_escaped_cert``, IIS ARR's base64
  DER ``X-ARR-ClientCert``), or the peer certificate of gunicorn's own TLS socket. A header
  from any other peer is ignored and logged: a client cannot claim a certificate by typing it.
* :class:`CertificateVerifier` checks it ourselves, whatever the proxy did, with
  ``cryptography``'s X.509 verification (``PolicyBuilder(...).build_client_verifier()``)
  against ``CLIENT_CERT_CA_FILE``: validity dates, Extended Key Usage (Client Authentication or
  Smart Card Logon), key usage (digitalSignature when present), chain; then revocation from CRL
  files or the certificate's CRL distribution points (fetched over http, cached until the CRL's
  ``nextUpdate``, at most an hour). Every refusal is a
  :class:`~connector.errors.CertificateRejected` whose ``reason`` is plain words.
* :func:`mapping_filters` names the person: in the order of ``CLIENT_CERT_MAPPING``, the UPN in
  the SAN (``otherName`` msUPN, as Windows smart-card logon does), AD ``altSecurityIdentities``
  strong mappings (KB5014754: ``X509:<I>…<SR>…``, ``X509:<SKI>…``, ``X509:<SHA1-PUKEY>…``; the
  weak subject-based forms only when ``CLIENT_CERT_ALLOW_WEAK_MAPPING``), the SAN e-mail, the
  subject's CN. :func:`find_person` asks the directory for each in turn: the first that finds
  exactly one entry wins, two or more entries refuse.

Nothing here logs a certificate's content beyond its subject, issuer and serial number.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from ldap.filter import escape_filter_chars

from connector.errors import CertificateRejected, ConfigError
from connector.netpolicy import Address, Network, in_networks

log = logging.getLogger(__name__)

SMART_CARD_LOGON = ObjectIdentifier("1.3.6.1.4.1.311.20.2.2")
MS_UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
#: The largest certificate header (or chain) accepted; a smart-card chain is a few KB.
MAX_CERT_BYTES = 32 * 1024
#: At most this many certificates in a presented chain (leaf included).
MAX_CHAIN = 5
CRL_MAX_AGE = 3600.0
CRL_FETCH_TIMEOUT = (3.05, 5.0)
MAX_CRL_BYTES = 8 * 1024 * 1024

_READABLE = "The certificate your browser sent could not be read."


@dataclass(frozen=True)
class Presented:
    """A certificate as a request brought it: the leaf, further certificates, and from where."""

    leaf: x509.Certificate
    extra: tuple[x509.Certificate, ...]
    source: str  # the header's name, or "tls"


def _der_or_pem(value: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (one or several) or from DER/base64 DER.

    Raises:
        CertificateRejected: nothing readable (``malformed``), or too many (``too_large``).
    """
    text = value.strip()  # never for DER, whose last bytes may well be "white space"
    try:
        if value[:1] == b"\x30":
            certs = [x509.load_der_x509_certificate(value)]
        elif text.startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(text)
        else:
            try:
                der = base64.b64decode(b"".join(text.split()), validate=True)
            except (binascii.Error, ValueError):
                raise CertificateRejected(_READABLE, "malformed") from None
            certs = [x509.load_der_x509_certificate(der)]
    except ValueError:
        raise CertificateRejected(_READABLE, "malformed") from None
    if not certs:
        raise CertificateRejected(_READABLE, "malformed")
    if len(certs) > MAX_CHAIN:
        raise CertificateRejected(
            "The certificate chain your browser sent is too long.", "too_large"
        )
    return certs


def parse_header(name: str, value: str) -> Presented:
    """The certificate in a proxy's header: URL-escaped PEM (nginx), plain PEM, or base64 DER
    (IIS ARR).

    Raises:
        CertificateRejected: too large or unreadable.
    """
    if len(value) > MAX_CERT_BYTES:
        raise CertificateRejected("The certificate your browser sent is too large.", "too_large")
    raw = unquote(value) if "%" in value else value
    certs = _der_or_pem(raw.encode("latin-1", "replace"))
    return Presented(certs[0], tuple(certs[1:]), name)


def presented(
    headers: Any,
    environ: Mapping[str, Any],
    peer: Address | None,
    trusted_proxies: Sequence[Network],
    header_names: Iterable[str],
) -> Presented | None:
    """The certificate this request presents, or None.

    A header counts only when the TCP peer is a trusted proxy; otherwise it is logged and
    ignored. Without a header, the peer certificate of gunicorn's TLS socket is used.

    Raises:
        CertificateRejected: a certificate is there but cannot be read.
    """
    trusted = peer is not None and in_networks(peer, trusted_proxies)
    for name in header_names:
        value = headers.get(name)
        if not value or not value.strip():
            continue
        if not trusted:
            log.warning(
                "ignored a client-certificate header %s from %s: not a TRUSTED_PROXIES peer",
                name,
                peer,
            )
            continue
        return parse_header(name, value.strip())
    sock = environ.get("gunicorn.socket")
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        der = getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    if not der:
        return None
    return Presented(_der_or_pem(der)[0], (), "tls")


def _plain_date(when: datetime.datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC"


def _eku_validator(policy: Any, cert: x509.Certificate, ext: Any) -> None:
    """The verifier's EKU rule for the leaf: Client Authentication or Smart Card Logon."""
    if ext is None or not (ExtendedKeyUsageOID.CLIENT_AUTH in ext or SMART_CARD_LOGON in ext):
        raise ValueError("neither Client Authentication nor Smart Card Logon")


class CertificateVerifier:
    """Verifies client certificates against ``CLIENT_CERT_CA_FILE`` and the configured CRLs.

    Thread-safe; one per worker. CRLs are cached in memory: files until they change,
    downloaded ones until their ``nextUpdate`` (at most :data:`CRL_MAX_AGE`).

    Args:
        ca_file: PEM file of trusted authorities.
        crl_sources: CRL file paths and/or ``cdp``; ``off`` (or nothing) for no revocation check.
        fetch: GETs a URL and returns its body (tests and the default use requests).

    Raises:
        ConfigError: the CA file or a CRL file cannot be read.
    """

    def __init__(
        self,
        ca_file: str,
        crl_sources: Sequence[str] = ("cdp",),
        fetch: Callable[[str], bytes] | None = None,
    ) -> None:
        try:
            anchors = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError([f"CLIENT_CERT_CA_FILE: cannot read {ca_file} ({exc})"]) from None
        self.anchors = tuple(anchors)
        self._store = verification.Store(list(anchors))
        sources = [s for s in crl_sources if s and s.lower() != "off"]
        self.use_cdp = any(s.lower() == "cdp" for s in sources)
        self.crl_files = tuple(s for s in sources if s.lower() != "cdp")
        for path in self.crl_files:
            if not os.access(path, os.R_OK):
                raise ConfigError([f"CLIENT_CERT_CRL: cannot read {path}"])
        self._fetch = fetch or _http_get
        self._lock = threading.Lock()
        self._file_crls: dict[str, tuple[float, list[x509.CertificateRevocationList]]] = {}
        self._url_crls: dict[str, tuple[float, x509.CertificateRevocationList]] = {}

    def verify(
        self, cert: Presented, now: datetime.datetime | None = None
    ) -> list[x509.Certificate]:
        """The verified chain (leaf first, anchor last).

        Raises:
            CertificateRejected: with the reason in plain words.
        """
        now = now or datetime.datetime.now(datetime.UTC)
        leaf = cert.leaf
        if now < leaf.not_valid_before_utc:
            raise CertificateRejected(
                "Your certificate is not valid yet "
                f"(from {_plain_date(leaf.not_valid_before_utc)}).",
                "not_yet_valid",
            )
        if now > leaf.not_valid_after_utc:
            raise CertificateRejected(
                f"Your certificate has expired (on {_plain_date(leaf.not_valid_after_utc)}).",
                "expired",
            )
        _check_usage(leaf)
        ee_policy = (
            verification.ExtensionPolicy.webpki_defaults_ee()
            .require_present(
                x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _eku_validator
            )
            .may_be_present(x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
        )
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(now)
            .max_chain_depth(MAX_CHAIN)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy
            )
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, list(cert.extra))
        except verification.VerificationError as exc:
            log.info("client certificate %s not verified: %s", _describe(leaf), exc)
            raise CertificateRejected(
                "Your certificate was not issued by an authority this sign-in trusts.",
                "untrusted",
            ) from None
        chain = list(verified.chain)
        self._check_revocation(chain, now)
        return chain

    # --- revocation -----------------------------------------------------------------------

    def _check_revocation(self, chain: list[x509.Certificate], now: datetime.datetime) -> None:
        if not self.crl_files and not self.use_cdp:
            return
        for cert, issuer in itertools.pairwise(chain):
            crls = self._crls_for(cert, issuer, now)
            if crls is None:
                if cert is chain[0] and self.crl_files and not self.use_cdp:
                    # CRL files configured, none from this issuer: nothing says it is good
                    raise CertificateRejected(
                        "Whether your certificate has been revoked cannot be checked right now.",
                        "revocation_unknown",
                    )
                continue
            for crl in crls:
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                    log.info("client certificate %s is revoked", _describe(cert))
                    raise CertificateRejected("Your certificate has been revoked.", "revoked")

    def _crls_for(
        self, cert: x509.Certificate, issuer: x509.Certificate, now: datetime.datetime
    ) -> list[x509.CertificateRevocationList] | None:
        """Valid CRLs of ``issuer`` that apply, or None when none is known.

        Raises:
            CertificateRejected: distribution points are named but none gives a valid CRL.
        """
        found = [c for c in self._file_crl_list() if _crl_good(c, issuer, now)]
        if found:
            return found
        if not self.use_cdp:
            return None
        urls = _distribution_points(cert)
        if not urls:
            return None
        for url in urls:
            crl = self._url_crl(url, now)
            if crl is not None and _crl_good(crl, issuer, now):
                return [crl]
        log.warning("no valid CRL for %s from %s", _describe(cert), ", ".join(urls))
        raise CertificateRejected(
            "Whether your certificate has been revoked cannot be checked right now. "
            "Try again in a moment.",
            "revocation_unknown",
        )

    def _file_crl_list(self) -> list[x509.CertificateRevocationList]:
        out: list[x509.CertificateRevocationList] = []
        for path in self.crl_files:
            try:
                stamp = os.stat(path).st_mtime
            except OSError:
                continue
            with self._lock:
                cached = self._file_crls.get(path)
            if cached is None or cached[0] != stamp:
                try:
                    crls = _load_crls(Path(path).read_bytes())
                except (OSError, ValueError) as exc:
                    log.warning("CLIENT_CERT_CRL %s cannot be read: %s", path, exc)
                    crls = []
                cached = (stamp, crls)
                with self._lock:
                    self._file_crls[path] = cached
            out.extend(cached[1])
        return out

    def _url_crl(self, url: str, now: datetime.datetime) -> x509.CertificateRevocationList | None:
        with self._lock:
            cached = self._url_crls.get(url)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        try:
            crls = _load_crls(self._fetch(url))
        except (OSError, ValueError, requests.RequestException) as exc:
            log.warning("CRL %s cannot be fetched: %s", url, exc)
            return cached[1] if cached is not None else None
        if not crls:
            return None
        crl = crls[0]
        ttl = CRL_MAX_AGE
        if crl.next_update_utc is not None:
            ttl = max(0.0, min(ttl, (crl.next_update_utc - now).total_seconds()))
        with self._lock:
            self._url_crls[url] = (time.monotonic() + ttl, crl)
        return crl


def _http_get(url: str) -> bytes:
    with requests.get(url, timeout=CRL_FETCH_TIMEOUT, stream=True) as resp:
        resp.raise_for_status()
        body = resp.raw.read(MAX_CRL_BYTES + 1, decode_content=True)
    if len(body) > MAX_CRL_BYTES:
        raise ValueError("CRL larger than 8 MB")
    return bytes(body)


def _load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    if b"-----BEGIN X509 CRL-----" in data:
        out = []
        for block in data.split(b"-----END X509 CRL-----")[:-1]:
            start = block.find(b"-----BEGIN X509 CRL-----")
            out.append(x509.load_pem_x509_crl(block[start:] + b"-----END X509 CRL-----\n"))
        return out
    return [x509.load_der_x509_crl(data)]


def _crl_good(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, now: datetime.datetime
) -> bool:
    """Whether ``crl`` is ``issuer``'s, correctly signed and current."""
    if crl.issuer != issuer.subject:
        return False
    try:
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            return False
    except (TypeError, ValueError):
        return False
    return crl.next_update_utc is None or now <= crl.next_update_utc


def _distribution_points(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return []
    urls = []
    for point in ext.value:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(
                ("http://", "https://")
            ):
                urls.append(name.value)
    return urls


def _check_usage(leaf: x509.Certificate) -> None:
    """EKU (Client Authentication or Smart Card Logon) and key usage, with plain reasons."""
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or not (ExtendedKeyUsageOID.CLIENT_AUTH in eku or SMART_CARD_LOGON in eku):
        raise CertificateRejected(
            "Your certificate is not meant for signing in: it allows neither Client "
            "Authentication nor Smart Card Logon.",
            "usage",
        )
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.digital_signature:
        raise CertificateRejected(
            "Your certificate's key may not be used for signing in (no digital signature).",
            "usage",
        )


def _describe(cert: x509.Certificate) -> str:
    return (
        f"subject={cert.subject.rfc4514_string()!r} issuer={cert.issuer.rfc4514_string()!r} "
        f"serial={cert.serial_number:x}"
    )


# --- mapping ---------------------------------------------------------------------------------


def upns(cert: x509.Certificate) -> list[str]:
    """The msUPN ``otherName`` values of the SAN (a DER UTF8String each)."""
    out = []
    for other in _san(cert, x509.OtherName):
        if other.type_id != MS_UPN:
            continue
        value = other.value
        # UTF8String: tag 0x0c, a short or long length, the text
        if len(value) >= 2 and value[0] == 0x0C:
            length, start = value[1], 2
            if length & 0x80:
                count = length & 0x7F
                length, start = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
            text = value[start : start + length]
            if len(text) == length:
                try:
                    out.append(text.decode("utf-8"))
                except UnicodeDecodeError:
                    continue
    return out


def emails(cert: x509.Certificate) -> list[str]:
    """The e-mail addresses of the SAN."""
    return [str(v) for v in _san(cert, x509.RFC822Name)]


def common_names(cert: x509.Certificate) -> list[str]:
    """The subject's CN values."""
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _san(cert: x509.Certificate, kind: Any) -> list[Any]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(ext.get_values_for_type(kind))


def _x500(name: x509.Name) -> str:
    """A name as AD writes it in altSecurityIdentities: most significant RDN first."""
    return ",".join(rdn.rfc4514_string() for rdn in name.rdns)


def alt_security_identities(cert: x509.Certificate, allow_weak: bool = False) -> list[str]:
    """The ``altSecurityIdentities`` values that name this certificate (KB5014754).

    Strong: ``X509:<I>issuer<SR>serial`` (serial as hex in reversed byte order, as AD shows it),
    ``X509:<SKI>hex``, ``X509:<SHA1-PUKEY>hex`` (the certificate's SHA-1 thumbprint; the SHA-1
    of its public key is accepted too). Weak (only with ``allow_weak``): ``X509:<I>…<S>…``,
    ``X509:<S>…``, ``X509:<RFC822>…``.
    """
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
    out = [f"X509:<I>{_x500(cert.issuer)}<SR>{serial[::-1].hex()}"]
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        out.append(f"X509:<SKI>{ski.digest.hex()}")
    except x509.ExtensionNotFound:
        pass
    der = cert.public_bytes(serialization.Encoding.DER)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out.append(f"X509:<SHA1-PUKEY>{hashlib.sha1(der).hexdigest()}")  # noqa: S324 - AD's form
    out.append(f"X509:<SHA1-PUKEY>{hashlib.sha1(spki).hexdigest()}")  # noqa: S324
    if allow_weak:
        out.append(f"X509:<I>{_x500(cert.issuer)}<S>{_x500(cert.subject)}")
        out.append(f"X509:<S>{_x500(cert.subject)}")
        out.extend(f"X509:<RFC822>{e}" for e in emails(cert))
    return out


def mapping_filters(
    cert: x509.Certificate,
    order: Sequence[str],
    *,
    upn_filter: str,
    email_filter: str,
    cn_filter: str,
    allow_weak: bool = False,
) -> list[tuple[str, str]]:
    """(mapping, LDAP filter) pairs to try in order, values escaped; none for what the
    certificate does not carry."""

    def fill(template: str, values: list[str]) -> str | None:
        parts = [template.replace("{0}", escape_filter_chars(v)) for v in values if v]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else "(|" + "".join(parts) + ")"

    out: list[tuple[str, str]] = []
    for method in order:
        flt: str | None = None
        if method == "upn":
            flt = fill(upn_filter, upns(cert))
        elif method == "email":
            flt = fill(email_filter, emails(cert))
        elif method == "cn":
            flt = fill(cn_filter, common_names(cert))
        elif method == "altsecid":
            flt = fill("(altSecurityIdentities={0})", alt_security_identities(cert, allow_weak))
        if flt is not None:
            out.append((method, flt))
    return out


def find_person(
    filters: Sequence[tuple[str, str]], search: Callable[[str], list[Any]]
) -> tuple[str, Any]:
    """The first mapping that finds exactly one entry: (mapping, entry).

    Raises:
        CertificateRejected: ``ambiguous`` (a mapping finds several entries) or ``unmapped``.
    """
    for method, flt in filters:
        found = search(flt)
        if len(found) == 1:
            return method, found[0]
        if len(found) > 1:
            log.warning("certificate mapping %s finds several entries: refused", method)
            raise CertificateRejected(
                "Your certificate matches more than one account. Contact your administrator.",
                "ambiguous",
            )
    raise CertificateRejected(
        "No account matches your certificate. Sign in with your password.", "unmapped"
    )
