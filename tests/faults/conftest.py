"""The fault suite's fixtures and its table.

Each test runs a stream of commands through devhub -> connector (gunicorn) -> directory while
one fault happens, then records a :class:`faultkit.Row`. At the end of the session the rows are
printed as one table (``pytest_terminal_summary``: shown with or without ``-s``).

* ``fault_table``  the list the tests append their rows to.
* ``hub_factory``  ``hub_factory(name, **options)`` starts a devhub (options as
                   ``DevHubProcess``'s) in the test's directory, stopped at the end of the test.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # faultkit, with any --import-mode

from faultkit import Row
from hubs import DevHubProcess, start_devhub

ROWS: list[Row] = []

_COLUMNS = (
    ("fault", 44),
    ("sent", 5),
    ("results", 7),
    ("lost", 4),
    ("dup", 3),
    ("slowest s", 9),
    ("errors", 16),
    ("sign-ins", 18),
    ("relay s/l/l/d", 13),
    ("recovery s", 10),
    ("limit s", 7),
    ("measured from", 30),
)


@pytest.fixture(scope="session")
def fault_table() -> list[Row]:
    return ROWS


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[..., DevHubProcess]]:
    started: list[DevHubProcess] = []

    def factory(name: str = "hub", **options: Any) -> DevHubProcess:
        hub = start_devhub(tmp_path / name, **options)
        started.append(hub)
        return hub

    try:
        yield factory
    finally:
        for hub in started:
            hub.stop()


def _cells(row: Row) -> list[str]:
    errors = " ".join(f"{name}:{n}" for name, n in sorted(row.errors.items())) or "-"
    return [
        row.fault,
        str(row.sent),
        str(row.results),
        str(row.lost),
        str(row.duplicated),
        f"{row.slowest:.1f}",
        errors,
        row.signins or "-",
        "-" if row.relay is None else str(row.relay),
        "-" if row.recovery is None else f"{row.recovery:.1f}",
        "-" if row.limit is None else f"{row.limit:g}",
        row.measured_from,
    ]


def format_table(rows: list[Row]) -> list[str]:
    """The table as lines of text."""
    widths = [max(w, *(len(_cells(r)[i]) for r in rows)) for i, (_, w) in enumerate(_COLUMNS)]
    header = " | ".join(name.ljust(w) for (name, _), w in zip(_COLUMNS, widths, strict=True))
    lines = [header, "-+-".join("-" * w for w in widths)]
    for row in rows:
        cells = _cells(row)
        lines.append(
            " | ".join(
                c.ljust(w) if i in (0, 6, 7, 11) else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    terminalreporter.section("fault suite")
    for line in format_table(ROWS):
        terminalreporter.write_line(line)
    terminalreporter.write_line(
        "lost = commands without a result; dup = commands answered more than once; slowest = "
        "longest a command waited for its result at the hub; errors = "
        "error results (Unavailable while the directory is down is a precise answer); "
        "sign-ins = browser sign-ins by HTTP status (303 handed to the hub, 200 the form with "
        "a reason, 503 'cannot be reached right now'); relay = the sign-ins sent to the hub "
        "(303) / landed there (relayed by the agent) / lost / held twice; recovery = seconds "
        "from the moment "
        "named in the last column to the first login that succeeded after it."
    )
