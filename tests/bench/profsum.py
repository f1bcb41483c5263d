"""Summarise py-spy's collapsed stacks (``--format raw``): where the samples are, by function.

    python3 tests/bench/profsum.py FILE... [--top N] [--match TEXT]

*inclusive* counts a function once per sample in which it appears anywhere on the stack;
*self* counts the innermost frame only. Thread-name frames (``process N:"..."``/``thread``)
are dropped; idle samples are not recorded by py-spy unless asked for.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterable

_LINE = re.compile(r"^(.*) (\d+)$")
_NOISE = re.compile(r"^(process \d+:|thread \()")


def _frame(text: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)`` (lines vary within a function)."""
    m = re.match(r"^(.*?) \((.*?)(?::\d+)?\)$", text.strip())
    if not m:
        return text.strip()
    func, path = m.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{func} ({short})"


def load(paths: Iterable[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for path in paths:
        with open(path, errors="replace") as fh:
            for line in fh:
                m = _LINE.match(line.rstrip("\n"))
                if not m:
                    continue
                frames = [_frame(f) for f in m.group(1).split(";") if not _NOISE.match(f)]
                if frames:
                    stacks.append((frames, int(m.group(2))))
    return stacks


#: frames every worker thread has: they say nothing about where the time goes
_PLUMBING = re.compile(
    r"^(Thread\.|_worker |_WorkItem\.run|ThreadWorker\.handle|Flask\.(__call__|wsgi_app|"
    r"full_dispatch_request|dispatch_request) )"
)


def summarise(stacks: list[tuple[list[str], int]], top: int = 25, plumbing: bool = True) -> str:
    """The top frames, inclusive and self, as percentages of all samples."""
    if not plumbing:
        stacks = [([f for f in fr if not _PLUMBING.match(f)] or fr, n) for fr, n in stacks]
    total = sum(n for _, n in stacks) or 1
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    lines = [f"{total} samples", "", f"top {top} inclusive:"]
    for f, n in inclusive.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {f}")
    lines += ["", f"top {top} self:"]
    for f, n in own.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("files", nargs="+")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", help="only stacks with a frame containing this text")
    args = p.parse_args()
    stacks = load(args.files)
    if args.match:
        stacks = [(f, n) for f, n in stacks if any(args.match in x for x in f)]
    print(summarise(stacks, args.top))


if __name__ == "__main__":
    main()
