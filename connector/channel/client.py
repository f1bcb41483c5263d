"""HTTP calls to the hub: requests sessions, explicit timeouts, agent tokens, hub clock.

Errors are translated here, once: :class:`HubUnavailable` (connection refused or reset,
timeouts, ``429``, ``5xx`` — retry later), :class:`HubRejected` (any other ``4xx`` — the hub
refuses what we sent), :class:`HubUntrusted` (its TLS certificate is not trusted).
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import http.client
import json as jsonlib
import logging
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.hooks import dispatch_hook
from requests.utils import DEFAULT_CA_BUNDLE_PATH, should_bypass_proxies
from urllib3.util.retry import Retry

from connector import __version__
from connector.channel.http1 import Connection
from connector.channel.identity import AgentIdentity
from connector.errors import HubError as HubError  # re-exported: the errors' old home
from connector.errors import HubRejected as HubRejected
from connector.errors import HubUnavailable as HubUnavailable
from connector.errors import HubUntrusted as HubUntrusted
from connector.settings import Settings
from connector.urls import hub_url_problem, scrub_proxy, without_userinfo

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "2"


class HubClock:
    """The hub's time, estimated from ``serverTime`` at the midpoint of each round trip."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.measured = False
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the epoch on the hub's clock."""
        return time.time() + self.offset

    def set_offset(self, offset: float) -> None:
        """Take an offset measured some other way (the hub's HTTP Date header)."""
        with self._lock:
            self.offset = offset
            self.measured = True

    def update(self, server_time_ms: Any, sent: float, received: float) -> None:
        """Take a new measurement from a response's ``serverTime``."""
        if not isinstance(server_time_ms, int | float) or isinstance(server_time_ms, bool):
            return
        with self._lock:
            self.offset = server_time_ms / 1000.0 - (sent + received) / 2.0
            self.measured = True


class CuttableAdapter(HTTPAdapter):
    """An adapter whose open connections another thread can cut (:meth:`cut`): a long poll
    blocked reading the hub's answer then fails at once instead of waiting out its hold.

    Every connection its pools open (directly or through the proxy) is remembered weakly; the
    pools are urllib3's own, given a connection class that records itself when it connects.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._live: weakref.WeakSet[Any] = weakref.WeakSet()
        super().__init__(**kwargs)

    def _tracked(self, manager: Any) -> Any:
        live = self._live
        classes: dict[str, Any] = {}
        for scheme, pool_cls in manager.pool_classes_by_scheme.items():

            class Connection(pool_cls.ConnectionCls):  # type: ignore[name-defined,misc]
                def connect(self) -> None:
                    super().connect()
                    live.add(self)

            classes[scheme] = type(pool_cls.__name__, (pool_cls,), {"ConnectionCls": Connection})
        manager.pool_classes_by_scheme = classes
        return manager

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._tracked(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        fresh = proxy not in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        return self._tracked(manager) if fresh else manager

    def cut(self) -> int:
        """Shut down every open connection's socket; how many were cut."""
        return _shut_down(self._live)


def _shut_down(connections: Iterable[Any]) -> int:
    """Shut down the socket of each open one of ``connections``; how many were cut."""
    cut = 0
    for conn in list(connections):
        sock = getattr(conn, "sock", None)
        if sock is None:
            continue
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
            cut += 1
    return cut


def make_session(settings: Settings, *, cuttable: bool = False) -> requests.Session:
    """A session for the hub: connection-level retries only, explicit trust; with
    ``cuttable`` its connections can be cut from another thread (see :class:`CuttableAdapter`).
    """
    # urllib3 warns of each connection retry with the whole URL: the ticket's path is a
    # bearer secret. The failure itself is reported by us, without it.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    session = requests.Session()
    session.trust_env = False  # proxies and CAs come from the settings, not from stray env
    # read=False, not 0: a read error is re-raised as itself, so a hub that accepted the
    # request but answered too late is a Timeout ("did not answer in time"), not a
    # MaxRetryError that requests would report as a ConnectionError ("cannot reach")
    retry = Retry(
        total=2,
        connect=2,
        read=False,
        status=0,
        other=0,
        backoff_factor=0.2,
        allowed_methods=None,
        raise_on_status=False,
    )
    adapter_cls = CuttableAdapter if cuttable else HTTPAdapter
    adapter = adapter_cls(max_retries=retry, pool_connections=2, pool_maxsize=8)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = settings.hub_ca_file or True
    session.headers["User-Agent"] = f"ad-ldap-connector/{__version__}"
    return session


def proxies_for(url: str, settings: Settings) -> dict[str, str]:
    """The proxy for ``url`` per HTTPS_PROXY / NO_PROXY (none when bypassed)."""
    if not settings.https_proxy:
        return {}
    if settings.no_proxy and should_bypass_proxies(url, no_proxy=settings.no_proxy):
        return {}
    return {"https": settings.https_proxy, "http": settings.https_proxy}


def request_json(
    session: requests.Session,
    settings: Settings,
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
    read_timeout: float = 30.0,
) -> tuple[Any, float, float]:
    """One JSON request; returns (body, time sent, time received).

    Raises:
        HubUnavailable: not reachable, timed out, 429 or 5xx.
        HubUntrusted: TLS verification failed, or the URL is plain http to another host.
        HubRejected: another 4xx, or a body that is not JSON.
    """
    _refuse_insecure(url)
    sent = time.time()
    # Straight to the session's adapter (its pool and retries): Session.request's merging of
    # environment, cookies and redirects is a fifth of a call's CPU and none of it applies
    # here (trust_env is off, the hub sets no cookies, redirects are not followed).
    merged = {**session.headers, **(headers or {})}
    data = None
    if json is not None:
        data = jsonlib.dumps(json, separators=(",", ":"), allow_nan=False).encode()
        merged["Content-Type"] = "application/json"
    prepared = _prepared_url(method, url).copy()  # the URL parsed once per endpoint
    prepared.prepare_headers(merged)
    prepared.prepare_body(data, None)
    try:
        resp = session.get_adapter(url).send(
            prepared,
            timeout=(settings.hub_connect_timeout, read_timeout),
            verify=True if session.verify is None else session.verify,
            proxies=proxies_for(url, settings),
        )
        _ = resp.content  # read the body here: a connection cut mid-answer is a RequestException
    except requests.exceptions.SSLError as exc:
        raise HubUntrusted(
            f"the hub's TLS certificate is not trusted ({_reason(exc, settings)}); "
            "set HUB_CA_FILE to the CA that issued it"
        ) from None
    except requests.exceptions.ProxyError as exc:
        raise HubUnavailable(
            f"the proxy {without_userinfo(str(settings.https_proxy))} failed: "
            f"{_reason(exc, settings)}"
        ) from None
    except requests.exceptions.Timeout as exc:
        raise HubUnavailable(f"the hub did not answer in time ({_reason(exc, settings)})") from None
    except requests.exceptions.RequestException as exc:
        raise HubUnavailable(
            f"cannot reach the hub at {_origin(url)}: {_reason(exc, settings)}"
        ) from None
    received = time.time()
    # the session's response hooks still see it (the troubleshooter reads the Date header)
    resp = dispatch_hook("response", session.hooks, resp)  # type: ignore[no-untyped-call]
    body = _answer(url, resp.status_code, resp.reason, resp.headers, resp.content)
    return body, sent, received


def _answer(url: str, status: int, reason: str | None, headers: Any, content: bytes) -> Any:
    """The JSON body of the hub's answer, or the error it means (one place for both senders).

    Raises:
        HubUnavailable: 429 or 5xx.
        HubRejected: another status from 300 up, or a body that is not JSON.
    """
    if status == 429 or status >= 500:
        raise HubUnavailable(f"the hub answered {status}", retry_after=_retry_after(headers))
    try:
        body = jsonlib.loads(content)
    except ValueError:  # not UTF-8 or not JSON
        body = None
    if status >= 300:
        code = body.get("error") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        raise HubRejected(
            f"the hub refused {urlsplit(url).path}: {status} "
            f"{code or ''} {message or reason or ''}".strip(),
            status,
            code if isinstance(code, str) else None,
            _http_date(headers.get("Date")),
        )
    if body is None:
        raise HubRejected(f"the hub's answer to {urlsplit(url).path} is not JSON", status)
    return body


def _refuse_insecure(url: str) -> None:
    """Raise :class:`HubUntrusted` if ``url`` must not be called (see :func:`_insecure`)."""
    insecure = _insecure(url)
    if insecure:
        raise HubUntrusted(f"refusing to call the hub at {_origin(url)}: its URL {insecure}")


@functools.lru_cache(maxsize=64)
def _insecure(url: str) -> str | None:
    """Why ``url`` must not be called (TLS to the hub, http only on loopback), or None."""
    return hub_url_problem(url)


@functools.lru_cache(maxsize=64)
def _prepared_url(method: str, url: str) -> requests.PreparedRequest:
    """A request with ``method`` and ``url`` prepared (parsed, quoted); copy it to use it."""
    prepared = requests.PreparedRequest()
    prepared.prepare(method=method, url=url)
    return prepared


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _reason(exc: Exception, settings: Settings) -> str:
    """The error's text, cut, without the proxy's credentials (urllib3 names the proxy)."""
    text = scrub_proxy(str(exc), settings.https_proxy)
    return text if len(text) < 300 else text[:300] + "…"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class DirectPoster:
    """POSTs to the hub on one kept-alive connection per calling thread (:mod:`.http1`).

    For the agent's short calls when no proxy is in the way (polls, results, relayed
    sign-ins: one per sign-in when they arrive one at a time): ``requests`` and urllib3 spend
    about as much CPU on a call as the rest of the call together (measured: 810 against 420 µs
    per relayed sign-in, the agent token included; a poll 577 against 280 µs), and
    ``http.client`` still most of what is left (see :mod:`.http1`). Trust is the same as
    :func:`make_session`'s (``HUB_CA_FILE``, else requests' CA bundle; hostname checked); a
    kept connection the hub closed meanwhile is replaced and the request sent once more (the
    endpoints are idempotent: results by id, sign-ins by ``ref``, a poll hands out commands
    only with its answer); any other failure is the caller's to retry, with backoff.
    :meth:`cut` fails a request in progress at once, from another thread (drain, a long poll).
    """

    def __init__(self, settings: Settings, base: str) -> None:
        parts = urlsplit(base)
        self.settings = settings
        self.host = parts.hostname or ""
        self.port = parts.port
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            ca = settings.hub_ca_file or DEFAULT_CA_BUNDLE_PATH
            if os.path.isdir(ca):
                self.context = ssl.create_default_context(capath=ca)
            else:
                self.context = ssl.create_default_context(cafile=ca)
        self.headers = {
            "User-Agent": f"ad-ldap-connector/{__version__}",
            "Content-Type": "application/json",
            "Accept": "*/*",
        }
        self._local = threading.local()
        self._open: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._cuts = 0

    def close(self) -> None:
        """Close every thread's connection (each opens a new one on its next call)."""
        for conn in list(self._open):
            conn.close()

    def cut(self) -> int:
        """Shut down every open connection's socket: a request waiting on one fails at once
        and is not sent again. How many were cut."""
        self._cuts += 1
        return _shut_down(self._open)

    def _connect(self) -> Connection:
        conn = Connection(
            self.host, self.port, timeout=self.settings.hub_connect_timeout, context=self.context
        )
        conn.connect()
        self._open.add(conn)
        return conn

    def open(self, timeout: float) -> Connection:
        """A new connection for one caller to keep (:meth:`cut` and :meth:`close` reach it
        too), its reads and writes bounded by ``timeout``; OSError on failure."""
        conn = self._connect()
        assert conn.sock is not None
        conn.sock.settimeout(timeout)
        return conn

    def post(
        self, path: str, data: bytes, headers: dict[str, str], read_timeout: float
    ) -> tuple[int, str, Any, bytes]:
        """(status, reason, headers, body) of one POST; OSError, HTTPException or ValueError
        (a header that would change the request) on failure."""
        conn: Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        cuts = self._cuts
        for attempt in (1, 2):
            fresh = conn is None
            if conn is None:
                conn = self._connect()
            try:
                assert conn.sock is not None
                conn.sock.settimeout(read_timeout)
                status, reason, answer_headers, content, will_close = conn.post(
                    path, data, {**self.headers, **headers}
                )
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                conn = None
                if fresh or attempt == 2 or self._cuts != cuts:
                    raise
                continue  # the hub closed the kept connection: once more on a new one
            except BaseException:
                conn.close()
                raise
            if will_close:
                conn.close()
            else:
                self._local.conn = conn
            return status, reason, answer_headers, content
        raise AssertionError("unreachable")


def post_json_direct(
    poster: DirectPoster,
    settings: Settings,
    url: str,
    body: Any,
    headers: dict[str, str],
    read_timeout: float,
) -> tuple[Any, float, float]:
    """:func:`request_json`'s POST on a :class:`DirectPoster`: the same checks, errors and
    answer handling.

    Raises:
        HubUnavailable: not reachable, timed out, 429 or 5xx.
        HubUntrusted: TLS verification failed, or the URL is plain http to another host.
        HubRejected: another 4xx, or a body that is not JSON.
    """
    _refuse_insecure(url)
    data = jsonlib.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    sent = time.time()
    with _direct_errors(settings, url):
        status, reason, answer_headers, content = poster.post(
            urlsplit(url).path, data, headers, read_timeout
        )
    received = time.time()
    return _answer(url, status, reason, answer_headers, content), sent, received


@contextlib.contextmanager
def _direct_errors(settings: Settings, url: str) -> Iterator[None]:
    """What a call on a :class:`DirectPoster` connection raises, as the hub errors that
    :func:`request_json` raises."""
    try:
        yield
    except ssl.SSLError as exc:
        raise HubUntrusted(
            f"the hub's TLS certificate is not trusted ({_reason(exc, settings)}); "
            "set HUB_CA_FILE to the CA that issued it"
        ) from None
    except TimeoutError as exc:
        raise HubUnavailable(f"the hub did not answer in time ({_reason(exc, settings)})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise HubUnavailable(
            f"cannot reach the hub at {_origin(url)}: {_reason(exc, settings)}"
        ) from None


#: How long the agent waits for the hub's answer to a batch of results or sign-ins.
ACKED_READ_TIMEOUT = 30.0


class PreparedSignins(NamedTuple):
    """The relay's own connection and the headers of its next request (see :mod:`.relay`)."""

    conn: Connection
    path: str
    headers: dict[str, str]
    at: float  # monotonic: the connection's last use (opened, or an answer read on it)


def _acked_in(data: Any, path: str) -> set[str]:
    """The ids or refs of an ``agent/results`` or ``agent/signins`` answer."""
    acked = data.get("acked")
    if not isinstance(acked, list):
        raise HubRejected(f"the hub's {path} answer has no acked list", 200)
    return {a for a in acked if isinstance(a, str)}


class HubClient:
    """The agent's calls: poll, post results, relay browser sign-ins."""

    def __init__(
        self,
        settings: Settings,
        identity: AgentIdentity,
        agent_id: str,
        clock: HubClock | None = None,
    ) -> None:
        if not settings.hub_configured:
            raise ValueError("the hub is not configured: run `connector setup --ticket URL`")
        self.settings = settings
        self.identity = identity
        self.agent_id = agent_id
        self.clock = clock or HubClock()
        self.session = make_session(settings)
        # long polls on their own connections, which drain can cut (see cut_polls)
        self.poll_session = make_session(settings, cuttable=True)
        self.base = str(settings.ad_hub).rstrip("/")
        self.signins_url = f"{self.base}/agent/signins"  # a web thread's writes (see .relay)
        # polls, results and sign-ins straight on http.client, unless a proxy is in the way;
        # polls apart, so that cutting them leaves the others alone
        proxied = bool(proxies_for(self.base, settings))
        self.direct = None if proxied else DirectPoster(settings, self.base)
        self.direct_polls = None if proxied else DirectPoster(settings, self.base)

    def close(self) -> None:
        """Close the sessions' connections."""
        self.session.close()
        self.poll_session.close()
        for direct in (self.direct, self.direct_polls):
            if direct is not None:
                direct.close()

    def cut_polls(self) -> int:
        """Cut the connection of a poll in progress (it fails at once); how many were cut.

        Commands the hub was handing out on it at that instant stay leased to us until the
        lease lapses, then go to another agent: late, never lost.
        """
        if self.direct_polls is not None:
            return self.direct_polls.cut()
        adapter = self.poll_session.get_adapter(self.base)
        return adapter.cut() if isinstance(adapter, CuttableAdapter) else 0

    def _headers(self) -> dict[str, str]:
        token = self.identity.token(
            issuer=str(self.settings.connection),
            audience=str(self.settings.realm),
            subject=self.agent_id,
            now=self.clock.now(),
        )
        return {"Authorization": f"Bearer {token}", "X-Connector-Protocol": PROTOCOL_VERSION}

    def _call(self, path: str, body: Any, read_timeout: float, *, poll: bool = False) -> Any:
        url = f"{self.base}/agent/{path}"
        direct = self.direct_polls if poll else self.direct
        for attempt in (1, 2):
            try:
                if direct is not None:
                    data, sent, received = post_json_direct(
                        direct, self.settings, url, body, self._headers(), read_timeout
                    )
                else:
                    data, sent, received = request_json(
                        self.poll_session if poll else self.session,
                        self.settings,
                        "POST",
                        url,
                        json=body,
                        headers=self._headers(),
                        read_timeout=read_timeout,
                    )
                break
            except HubRejected as exc:
                # A token refused because our clock is off: learn the hub's time from its Date
                # header and try once more with a token timed on it.
                if attempt == 2 or exc.status != 401 or exc.server_date is None:
                    raise
                offset = exc.server_date - time.time()
                if abs(offset - self.clock.offset) < 30:
                    raise
                self.clock.set_offset(offset)
                log.warning(
                    "the hub refused our token and its clock differs from ours by %.0f s; "
                    "retrying with the hub's time",
                    offset,
                )
        if not isinstance(data, dict):
            raise HubRejected(f"the hub's answer to agent/{path} is not an object", 200)
        if "serverTime" in data:
            self.clock.update(data["serverTime"], sent, received)
        return data

    def poll(self, max_commands: int, wait: float) -> tuple[list[Any], float | None]:
        """Commands for this agent (held by the hub up to ``wait`` seconds), and the lease.

        Raises:
            HubError: the poll failed.
        """
        data = self._call(
            "poll",
            {"max": max_commands, "wait": wait},
            read_timeout=wait + 15,
            poll=True,
        )
        commands = data.get("commands")
        if not isinstance(commands, list):
            raise HubRejected("the hub's poll answer has no command list", 200)
        lease = data.get("leaseSeconds")
        return commands, float(lease) if isinstance(lease, int | float) else None

    def prepare_signins(self, conn: Connection | None) -> PreparedSignins | None:
        """What a web thread needs to write the relay's next request itself (see
        :mod:`.relay`): ``conn`` if it is still open, else a new connection, and the headers
        with a fresh agent token. None behind a proxy (then only the relay thread sends).

        Raises:
            HubError: the hub cannot be reached (as :meth:`relay_signins` would raise it).
        """
        if self.direct is None:
            return None
        url = self.signins_url
        _refuse_insecure(url)
        if conn is None or conn.sock is None:
            with _direct_errors(self.settings, url):
                conn = self.direct.open(ACKED_READ_TIMEOUT)
        headers = {**self.direct.headers, **self._headers()}
        return PreparedSignins(conn, urlsplit(url).path, headers, time.monotonic())

    @staticmethod
    def signins_body(signins: list[dict[str, Any]]) -> bytes:
        """The body of an ``agent/signins`` request, as :meth:`relay_signins` sends it."""
        body = {"signins": signins}
        return jsonlib.dumps(body, separators=(",", ":"), allow_nan=False).encode()

    def write_signins(self, prepared: PreparedSignins, body: bytes) -> None:
        """Write an ``agent/signins`` request (``body`` from :meth:`signins_body`) on a
        prepared connection, its answer not awaited (read it with :meth:`signins_answer`).

        Raises:
            HubError: the write failed (the connection is closed: send the sign-ins again).
        """
        try:
            with _direct_errors(self.settings, self.signins_url):
                prepared.conn.send_post(prepared.path, body, prepared.headers)
        except HubError:
            prepared.conn.close()
            raise

    def signins_answer(self, prepared: PreparedSignins) -> set[str]:
        """Read the answer to :meth:`write_signins`: the refs the hub acknowledged.

        Raises:
            HubError: no answer, or one refusing the request (the connection is closed).
        """
        url = self.signins_url
        try:
            with _direct_errors(self.settings, url):
                status, reason, headers, content, will_close = prepared.conn.answer()
            if will_close:
                prepared.conn.close()
            data = _answer(url, status, reason, headers, content)
            if not isinstance(data, dict):
                raise HubRejected("the hub's answer to agent/signins is not an object", 200)
        except HubError:
            prepared.conn.close()
            raise
        return _acked_in(data, "signins")

    def _acked(self, path: str, items: list[dict[str, Any]]) -> set[str]:
        """Post ``{path: items}`` to ``agent/{path}``; the ids or refs the hub acknowledged."""
        return _acked_in(self._call(path, {path: items}, read_timeout=ACKED_READ_TIMEOUT), path)

    def post_results(self, results: list[dict[str, Any]]) -> set[str]:
        """Send results (protocol §4); returns the ids the hub acknowledged.

        Raises:
            HubError: the call failed (the results are still ours to resend).
        """
        return self._acked("results", results)

    def relay_signins(self, signins: list[dict[str, Any]]) -> set[str]:
        """Send sign-ins ``{ref, wctx, profile, method}`` (protocol §5.2); returns the refs the
        hub acknowledged.

        Raises:
            HubError: the call failed (the sign-ins are still ours to resend).
        """
        return self._acked("signins", signins)
