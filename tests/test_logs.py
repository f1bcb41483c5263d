"""The log formats and the console's ring files (connector/logs.py)."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import time

from connector import logs

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _record(created: float, msg: str = "hello", **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "connector.test", "msg": msg, "levelno": 20})
    record.levelname = "INFO"
    record.created = created
    record.msecs = int((created - int(created)) * 1000)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _times(seed: int) -> list[float]:
    """Times in order, many in the same second, some just before and after a second's end."""
    rng = random.Random(seed)
    now, out = 1_780_000_000.0, []
    for _ in range(400):
        now += rng.choice((0.0004, 0.013, 0.2, 0.9996, 1.0, 61.7, 3600.0))
        out.append(now)
    return out


def test_the_text_line_is_the_standard_formatter_s():
    ours, theirs = logs.TextFormatter(FORMAT), logging.Formatter(FORMAT)
    for created in _times(7):
        assert ours.format(_record(created)) == theirs.format(_record(created)), created
    assert ours.formatTime(_record(0.5), "%H") == theirs.formatTime(_record(0.5), "%H")


def test_the_json_time_is_utc_to_the_millisecond():
    formatter = logs.JsonFormatter()
    for created in _times(8):
        record = _record(created, user="ann")
        line = json.loads(formatter.format(record))
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        assert line["time"] == f"{expected}.{record.msecs:03d}Z", created
        assert (line["message"], line["user"], line["level"]) == ("hello", "ann", "info")


def test_the_ring_counts_bytes_and_rotates_at_its_bound(tmp_path):
    ring = logs.RingHandler(tmp_path, max_bytes=1000)
    try:
        written = 0
        while not (tmp_path / f"{os.getpid()}.jsonl.1").exists():
            ring.emit(_record(time.time(), "é" * 40))  # 2 bytes each in UTF-8
            written += 1
        rotated = (tmp_path / f"{os.getpid()}.jsonl.1").read_bytes()
        assert len(rotated) > 1000 and written == rotated.count(b"\n")
        assert len(rotated) - len(rotated.split(b"\n")[-2]) - 1 <= 1000  # the line before fit
        ring.emit(_record(time.time(), "after"))
        current = (tmp_path / f"{os.getpid()}.jsonl").read_text(encoding="utf-8")
        assert [json.loads(line)["message"] for line in current.splitlines()] == ["after"]
    finally:
        ring.close()


def test_a_line_that_is_not_utf_8_is_kept_escaped(tmp_path):
    ring = logs.RingHandler(tmp_path)
    try:
        ring.emit(_record(time.time(), "bad \udcff name"))
        ring.emit(_record(time.time(), "next"))
    finally:
        ring.close()
    lines = (tmp_path / f"{os.getpid()}.jsonl").read_bytes().splitlines()
    assert len(lines) == 2 and b"\\udcff" in lines[0] and json.loads(lines[1])["message"] == "next"


def test_a_forked_child_writes_its_own_ring_file(tmp_path):
    ring = logs.RingHandler(tmp_path)
    try:
        ring.emit(_record(time.time(), "parent before"))
        pid = os.fork()
        if pid == 0:  # the child: its lines in its own file
            code = 0
            try:
                ring.emit(_record(time.time(), "child"))
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        ring.emit(_record(time.time(), "parent after"))
    finally:
        ring.close()

    def messages(owner: int) -> list[str]:
        text = (tmp_path / f"{owner}.jsonl").read_text(encoding="utf-8")
        return [json.loads(line)["message"] for line in text.splitlines()]

    assert messages(os.getpid()) == ["parent before", "parent after"]
    assert messages(pid) == ["child"]


def test_a_child_forked_while_the_parent_writes_a_line_can_write(tmp_path):
    """A fork while another thread of the parent holds the ring's lock (mid-line) leaves the
    child a lock of its own, not one held forever."""
    ring = logs.RingHandler(tmp_path)
    try:
        with ring._io_lock:  # as a parent's thread writing a line at the moment of the fork
            pid = os.fork()
            if pid == 0:
                signal.alarm(5)  # a lock held forever: SIGALRM ends the child, the test fails
                ring.emit(_record(time.time(), "child"))
                os._exit(0)
        _, status = os.waitpid(pid, 0)
    finally:
        ring.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert (tmp_path / f"{pid}.jsonl").read_text(encoding="utf-8").count('"child"') == 1
