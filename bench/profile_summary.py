#!/usr/bin/env python3
"""Top functions of a py-spy profile in collapsed-stack ("raw") format.

    py-spy record --gil --rate 250 --format raw -o /tmp/p.txt -- \\
        python bench/run.py --only overhead --database postgresql --runs 1
    python bench/profile_summary.py /tmp/p.txt --top 25

Prints the functions with the most samples on top of the stack (self) and anywhere on it
(inclusive), as a share of all samples. With --gil only samples holding the GIL are counted, so
the shares say where the CPU of the Python process goes.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# "function (path/to/file.py:123)" -> "function (file.py)"; line numbers dropped so a function
# counts once however many lines of it were sampled.
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    parts = path.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif "src" in parts:
        parts = parts[parts.index("src") + 1 :]
    else:
        parts = parts[-2:]
    return f"{match.group('fn')} ({'/'.join(parts)})"


def summarise(path: Path, top: int, match: str | None) -> None:
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        skip = ("process ", "thread ")
        frames = [short(f) for f in stack.split(";") if f and not f.startswith(skip)]
        if not frames:
            continue
        if match and not any(match in f for f in frames):
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    if not total:
        print("no samples")
        return
    print(f"{total} samples{f' (stacks containing {match!r})' if match else ''}\n")
    for title, counts in (("self", self_counts), ("inclusive", incl_counts)):
        print(f"top {top} by {title} samples")
        for frame, count in counts.most_common(top):
            print(f"  {100 * count / total:5.1f}%  {frame}")
        print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default=None, help="only stacks with a frame containing this")
    args = parser.parse_args()
    summarise(args.profile, args.top, args.match)
    return 0


if __name__ == "__main__":
    sys.exit(main())
