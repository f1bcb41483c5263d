"""The URLs the connector calls out to: which hub URLs may be used, and how a proxy URL's
credentials are kept out of messages and logs (pure functions, no network I/O)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from connector.netpolicy import is_loopback_host

__all__ = ["hub_url_problem", "scrub_proxy", "without_userinfo"]


def hub_url_problem(url: str) -> str | None:
    """Why ``url`` may not be used to reach the hub, or None: the hub is reached over https
    only; plain http is allowed to a loopback hub (the devhub, the tests) and nowhere else."""
    try:
        parts = urlsplit(url.strip())
        host, _ = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError:
        return "is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not host:
        return "must be an https:// URL"
    if scheme == "http" and not is_loopback_host(host):
        return (
            "must be https:// (plain http is refused: anyone on the path could swap the hub's "
            "answers; http is allowed only to a loopback hub: 127.0.0.0/8, ::1, localhost)"
        )
    return None


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` shown as ``***@``: proxy URLs carry credentials, and
    this is how one may appear in a message or a log line."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an invalid URL>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def scrub_proxy(text: str, proxy: str | None) -> str:
    """``text`` with the proxy URL's credentials taken out (whole, or as its pieces)."""
    if not proxy:
        return text
    try:
        parts = urlsplit(proxy)
    except ValueError:
        return text.replace(proxy, without_userinfo(proxy))
    text = text.replace(proxy, without_userinfo(proxy))
    for piece in (parts.netloc.rpartition("@")[0], parts.password, parts.username):
        for form in {piece, unquote(piece or "")}:  # as written, and percent-decoded
            if form and len(form) > 2:
                text = text.replace(form, "***")
    return text
