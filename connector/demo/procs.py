"""The demo's child processes: find binaries, pick ports, start, wait until ready, stop by PID.

Each child runs in its own process group (a Ctrl-C at the terminal reaches only the demo,
which then stops the children in order) and gets ``SIGTERM`` if the demo itself dies.
:meth:`Children.stop_all` stops exactly the PIDs it started, last started first, and then
any process that was below one of them (same PID *and* start time), never anything by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from connector.errors import ConnectorError

T = TypeVar("T")

#: sbin directories are not always on a user's PATH (slapd and krb5kdc live there)
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


class DemoError(ConnectorError):
    """A step of the demo failed; ``step`` names it (``directory``, ``hub``, ...)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


def find_binaries(needed: Mapping[str, str]) -> dict[str, str]:
    """Absolute paths of the ``{binary: Debian package}`` given (PATH, then the sbin dirs).

    Raises:
        DemoError: some are missing; the message names each one's Debian package.
    """
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    found = {name: shutil.which(name, path=path) for name in needed}
    missing = [name for name, where in found.items() if where is None]
    if missing:
        packages = sorted({needed[name] for name in missing})
        lines = "\n".join(f"  {name}  (Debian package {needed[name]})" for name in missing)
        raise DemoError(
            "prerequisites",
            f"required programs not found:\n{lines}\ninstall them with: "
            f"apt-get install {' '.join(packages)}  (or run deploy/quickstart.sh as root)",
        )
    return {name: where for name, where in found.items() if where is not None}


def port_free(port: int, *, udp: bool = False, ipv6: bool = False) -> bool:
    """Whether ``port`` can be bound on the IPv4 loopback (TCP, and UDP or ``::1`` if asked)."""
    kinds = [(socket.AF_INET, "127.0.0.1", socket.SOCK_STREAM)]
    if udp:
        kinds.append((socket.AF_INET, "127.0.0.1", socket.SOCK_DGRAM))
    if ipv6:
        kinds.append((socket.AF_INET6, "::1", socket.SOCK_STREAM))
    for family, host, kind in kinds:
        with socket.socket(family, kind) as s:
            if kind == socket.SOCK_STREAM:  # as servers do: a port in TIME_WAIT is usable
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def ipv6_loopback() -> bool:
    """Whether ``::1`` exists here (gunicorn then listens on it too, for ``localhost``)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def pick_port(wanted: int | None, preferred: int | None = None, **kinds: bool) -> int:
    """``wanted`` if given (0: any); else ``preferred`` if free; else a port free a moment ago.
    Never a port this process picked before (its server may not have bound it yet).

    Raises:
        DemoError: no free port was found.
    """
    with _PICKING:
        if wanted:
            _PICKED.add(wanted)  # never picked for another server
            return wanted
        if (
            wanted is None
            and preferred
            and preferred not in _PICKED
            and port_free(preferred, **kinds)
        ):
            _PICKED.add(preferred)
            return preferred
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            # the demo picks every port before its servers bind them: the kernel's random
            # pick can repeat one it gave a moment ago (about once in 14,000 pairs)
            if port not in _PICKED and port_free(port, **kinds):
                _PICKED.add(port)
                return port
    raise DemoError("ports", "no free port on 127.0.0.1")


_PICKED: set[int] = set()  # the ports pick_port chose in this process
_PICKING = threading.Lock()


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, indented, for an error message."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "  (no log)"
    return "\n".join(f"  | {line}" for line in text) or "  (empty log)"


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat``: tells a process from a later one with the same PID."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(root: int) -> dict[int, str]:
    """``{pid: start time}`` of every process below ``root`` (from ``/proc`` parent links)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    below: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - below
        below |= frontier
    return {pid: st for pid in below if (st := _start_time(pid)) is not None}


def _in_child() -> None:
    """Runs in each child between fork and exec: stop signals back on, die with the demo."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclasses.dataclass
class Child:
    """One started process, its log, and how long it may take to stop."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stop_timeout: float

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def exited(self) -> int | None:
        """The exit status if the process has ended."""
        return self.proc.poll()


class Children:
    """The processes the demo started, in start order; their PIDs go to ``pids_file``."""

    def __init__(self, pids_file: Path) -> None:
        self._children: list[Child] = []
        self._pids_file = pids_file
        self._descendants: dict[int, str] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 10.0,
    ) -> Child:
        """Start ``argv`` with its output in ``log``; recorded before any signal can stop us.

        Raises:
            DemoError: the program cannot be executed.
        """
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    process_group=0,
                    preexec_fn=_in_child,
                )
            child = Child(name, proc, log, stop_timeout)
            self._children.append(child)
            self._write_pids()
        except OSError as exc:
            raise DemoError(name, f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return child

    def pids(self) -> dict[str, int]:
        """``{name: pid}`` of the children started, in start order."""
        return {c.name: c.pid for c in self._children}

    def note_descendants(self, child: Child) -> list[int]:
        """Record the processes ``child`` started itself (gunicorn workers); their PIDs."""
        found = descendants(child.pid)
        self._descendants.update(found)
        self._write_pids()
        return sorted(found)

    def _write_pids(self) -> None:
        data = {
            "demo": os.getpid(),
            "children": self.pids(),
            "descendants": sorted(self._descendants),
        }
        self._pids_file.write_text(json.dumps(data, indent=2) + "\n")

    def check_running(self) -> None:
        """Raise if a child has ended on its own.

        Raises:
            DemoError: naming the child, with the end of its log.
        """
        for child in self._children:
            status = child.exited()
            if status is not None:
                raise DemoError(
                    child.name,
                    f"{child.name} (pid {child.pid}) exited with status {status}; "
                    f"the end of {child.log}:\n{tail(child.log)}",
                )

    def wait_for(self, child: Child, check: Callable[[], T | None], what: str, timeout: float) -> T:
        """Poll ``check`` until it returns a value, ``child`` dies, or ``timeout`` passes.

        Raises:
            DemoError: the child exited, or it was not ready in time.
        """
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            status = child.exited()
            if status is not None:
                raise DemoError(
                    child.name,
                    f"{child.name} exited with status {status} while starting; "
                    f"the end of {child.log}:\n{tail(child.log)}",
                )
            result = check()
            if result is not None:
                return result
            if time.monotonic() > deadline:
                raise DemoError(
                    child.name,
                    f"{what} not ready after {timeout:g} s; the end of {child.log}:\n"
                    f"{tail(child.log)}",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def forget_exited(self, child: Child) -> None:
        """Drop a child that has ended (reaped) from the records, e.g. before a retry."""
        if child.exited() is not None:
            self._children.remove(child)
            self._write_pids()

    def stop_all(self, report: Callable[[str], None]) -> bool:
        """Stop every child, last started first: SIGTERM, wait, SIGKILL; then leftovers.

        Returns:
            True if every child ended on SIGTERM within its time.
        """
        clean = True
        for child in reversed(self._children):
            below = descendants(child.pid) if child.exited() is None else {}
            self._descendants.update(below)
            if child.exited() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
                t0 = time.monotonic()
                try:
                    child.proc.wait(child.stop_timeout)
                    report(f"stopped {child.name} (pid {child.pid}) in {_secs(t0)}")
                except subprocess.TimeoutExpired:
                    clean = False
                    child.proc.kill()
                    child.proc.wait()
                    report(f"killed {child.name} (pid {child.pid}): no exit after SIGTERM")
            else:
                child.proc.wait()
        deadline = time.monotonic() + 5
        left = self._descendants
        while left:
            left = {p: st for p, st in left.items() if _start_time(p) == st}
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for pid in left:
            clean = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            report(f"killed left-over process {pid}")
        return clean


def _secs(t0: float) -> str:
    return f"{time.monotonic() - t0:.1f} s"
