"""Summarise a py-spy raw profile (``py-spy record --threads --format raw``) per thread.

    .venv/bin/py-spy record -r 1000 --threads --format raw -o /tmp/steps.txt -- \
        .venv/bin/python bench/run.py --only steps
    .venv/bin/python bench/pyspy_summary.py /tmp/steps.txt [--top 25] [--under FRAME]

Prints, for each thread kind (numbers stripped from names), its share of all samples
and the functions with the most inclusive and self samples. ``--under`` keeps only the
stacks that pass through a frame whose text contains FRAME (e.g. ``step_overhead``).
py-spy is a tool for investigating, not a dependency of perdure or of the benchmark.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict


def frame_name(frame: str) -> str:
    # "fn (path/to/file.py:123)" -> "file.py:fn"
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    fn, path = match.groups()
    return f"{path.rsplit('/', 1)[-1]}:{fn}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--under", default=None)
    args = parser.parse_args()

    total = 0
    threads: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    self_: dict[str, Counter[str]] = defaultdict(Counter)
    with open(args.profile) as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = stack.split(";")
            thread = re.sub(r"\d+", "N", frames[0].split(": ", 1)[-1])
            if args.under and not any(args.under in f for f in frames[1:]):
                continue
            total += count
            threads[thread] += count
            names = [frame_name(f) for f in frames[1:]]
            for name in set(names):
                inclusive[thread][name] += count
            if names:
                self_[thread][names[-1]] += count
    print(f"{total} samples")
    for thread, n in threads.most_common():
        print(f"\n== {thread}: {n} samples, {100 * n / total:.1f}% of all")
        print("  inclusive:")
        for name, c in inclusive[thread].most_common(args.top):
            print(f"    {100 * c / n:5.1f}%  {name}")
        print("  self:")
        for name, c in self_[thread].most_common(args.top // 2):
            print(f"    {100 * c / n:5.1f}%  {name}")


if __name__ == "__main__":
    main()
