"""Load generation for the benchmark: timed client loops in forked processes, a minimal
keep-alive HTTP/1.1 client, percentiles and CPU accounting.

Every loop is bounded twice: by its deadline (a fixed number of seconds) and by its supply
(pre-made tokens run out). Clients are forked processes, one per concurrent client, so the
load generator's GIL is never what limits a measurement; each reports its own CPU time.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_CTX = multiprocessing.get_context("fork")
_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class ClientResult:
    """What one client process did in its window."""

    ok: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: list[float] = dataclasses.field(default_factory=list)
    elapsed: float = 0.0
    cpu: float = 0.0  # this client's own CPU seconds in the window


@dataclasses.dataclass
class Point:
    """One measured point: a kind of operation at one concurrency."""

    ok: int
    errors: int
    elapsed: float
    latencies: list[float]
    client_cpu: float
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of values, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def merge(results: list[ClientResult]) -> Point:
    """The point made by several clients that ran side by side."""
    errors = [r.first_error for r in results if r.first_error]
    return Point(
        ok=sum(r.ok for r in results),
        errors=sum(r.errors for r in results),
        elapsed=max((r.elapsed for r in results), default=0.0),
        latencies=[x for r in results for x in r.latencies],
        client_cpu=sum(r.cpu for r in results),
        first_error=errors[0] if errors else "",
    )


# --------------------------------------------------------------------------------------
# running clients
# --------------------------------------------------------------------------------------

#: Runs in the child: (client index) -> the operation. The operation gets its sequence number
#: and may return its own latency in seconds (e.g. as the hub measured it); raising
#: StopIteration ends the client's window early (its supply ran out).
Setup = Callable[[int], Callable[[int], float | None]]


def _child(setup: Setup, index: int, start_at: float, seconds: float, limit: int, out: Any) -> None:
    result = ClientResult()
    try:
        op = setup(index)
    except Exception as exc:
        result.errors = 1
        result.first_error = f"setup: {type(exc).__name__}: {exc}"[:300]
        out.send(result)
        return
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    n = 0
    lat = result.latencies
    while n < limit:
        s = time.perf_counter()
        if s >= deadline:
            break
        try:
            own = op(n)
            result.ok += 1
            lat.append(time.perf_counter() - s if own is None else own)
        except StopIteration:
            break
        except Exception as exc:
            result.errors += 1
            if not result.first_error:
                result.first_error = f"{type(exc).__name__}: {exc}"[:300]
            if result.errors > 1000 and result.ok == 0:
                break
        n += 1
    result.elapsed = time.perf_counter() - t0
    result.cpu = time.process_time() - cpu0
    out.send(result)


def run_clients(
    setup: Setup, clients: int, seconds: float, limit: int = 10**9, timeout: float = 60.0
) -> Point:
    """Fork ``clients`` processes; each sets up, then runs its operation for ``seconds``.

    ``limit`` bounds the operations per client (a supply of pre-made tokens). Clients start
    together (after all have set up) and are joined with a bound; a stuck one is killed.
    """
    start_at = time.time() + 0.3 + 0.1 * clients
    procs, pipes = [], []
    for i in range(clients):
        parent, child = _CTX.Pipe(duplex=False)
        p = _CTX.Process(
            target=_child, args=(setup, i, start_at, seconds, limit, child), daemon=True
        )
        p.start()
        child.close()
        procs.append(p)
        pipes.append(parent)
    results = []
    deadline = time.monotonic() + seconds + timeout
    for p, pipe in zip(procs, pipes, strict=True):
        remaining = max(0.1, deadline - time.monotonic())
        if pipe.poll(remaining):
            results.append(pipe.recv())
        else:
            results.append(ClientResult(errors=1, first_error="client did not report in time"))
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)
    return merge(results)


# --------------------------------------------------------------------------------------
# a minimal HTTP/1.1 keep-alive client
# --------------------------------------------------------------------------------------


class HttpError(Exception):
    """An unexpected status or a broken connection."""


class HttpClient:
    """One keep-alive connection; requests are pre-built bytes, responses parsed minimally."""

    def __init__(self, host: str, port: int, timeout: float = 30.0, keepalive: bool = True) -> None:
        self.addr = (host, port)
        self.keepalive = keepalive
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.addr, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # closed with a reset: thousands of short connections leave no TIME_WAIT behind
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock, self.buf = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, raw: bytes) -> tuple[int, bytes, bytes]:
        """Send one request; (status, header block, body). Reconnects when the server closed."""
        for attempt in (1, 2):
            sock = self.sock or self._connect()
            try:
                sock.sendall(raw)
                return self._response(sock)
            except ConnectionError:
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(262144)
        if not chunk:
            raise _Closed("connection closed by the server")
        self.buf += chunk

    def _response(self, sock: socket.socket) -> tuple[int, bytes, bytes]:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill(sock)
        head = self.buf[:end]
        rest = self.buf[end + 4 :]
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i < 0:
            raise HttpError(f"status {status} without Content-Length")
        j = lower.find(b"\r\n", i + 2)
        length = int(lower[i + 17 : j if j > 0 else None])
        while len(rest) < length:
            chunk = sock.recv(262144)
            if not chunk:
                raise _Closed("connection closed mid-body")
            rest += chunk
        body, self.buf = rest[:length], rest[length:]
        if not self.keepalive or b"\r\nconnection: close" in lower or head.startswith(b"HTTP/1.0"):
            self.close()
        return status, head, body


class _Closed(HttpError, ConnectionError):
    pass


def header(head: bytes, name: str) -> str | None:
    """A response header's value (first one), case-insensitive."""
    key = b"\r\n" + name.lower().encode() + b":"
    lower = head.lower()
    i = lower.find(key)
    if i < 0:
        return None
    j = head.find(b"\r\n", i + 2)
    return head[i + len(key) : j if j > 0 else None].strip().decode("latin-1")


# --------------------------------------------------------------------------------------
# processes: CPU time and memory
# --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its exited children not included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mb(pid: int) -> float | None:
    """Resident set size in MB, None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pss_mb(pid: int) -> float | None:
    """Proportional set size in MB (shared pages split between the processes sharing them)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of a process (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return sorted(out)
