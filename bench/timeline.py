"""Where a sequential checkout's time goes between its commits (``bench/explain.py
timeline``).

A checkout of the benchmark's shape (four steps returning small dicts) runs one at a
time, with time stamps at: ``app.run``'s call, the start and end of every transaction
of the group committers (``GroupCommitter._commit``), the entry of the workflow
function and of each step function, and ``app.run``'s return. Each segment between two
stamps is reported as its median over the timed runs, so that the time outside the
commits (the Python of a start, of a step around its record, the hand-offs between
the caller's thread and a workflow thread) can be read beside the commits themselves.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

import perdure
from perdure.storage._batch import GroupCommitter

STEPS = ("order_intake", "authorize_payment", "update_inventory", "confirm_order")


def timeline(url: str, n: int, warmup: int = 50) -> dict[str, tuple[int, float]]:
    """Run ``n`` checkouts one at a time on ``url``; returns, per segment ("from -> to"),
    how many times a checkout crosses it and the median of its µs."""
    stamp = time.perf_counter_ns
    marks: list[tuple[str, int]] = []
    commit = GroupCommitter._commit

    def timed_commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        marks.append(("commit", stamp()))
        try:
            return commit(self, *args, **kwargs)
        finally:
            marks.append(("committed", stamp()))

    GroupCommitter._commit = timed_commit  # type: ignore[method-assign]
    try:
        app = perdure.App(url)

        def make(name: str) -> Any:
            def body(order_id: Any) -> dict[str, Any]:
                marks.append(("step", stamp()))
                return {"order": order_id, "step": name}

            return app.step(name=name)(body)

        steps = [make(name) for name in STEPS]

        @app.workflow(name="checkout")
        def checkout(order_id: Any) -> Any:
            marks.append(("workflow", stamp()))
            result = None
            for step in steps:
                result = step(order_id)
            return result

        segments: dict[str, list[float]] = defaultdict(list)
        with app:
            for i in range(warmup):
                app.run(checkout, f"warm-{i}")
            for i in range(n):
                marks.clear()
                began = stamp()
                app.run(checkout, f"order-{i}")
                ended = stamp()
                seq = [("run", began), *marks, ("returned", ended)]
                for (a, t0), (b, t1) in zip(seq, seq[1:], strict=False):
                    segments[f"{a} -> {b}"].append((t1 - t0) / 1000)
    finally:
        GroupCommitter._commit = commit  # type: ignore[method-assign]
    return {
        name: (round(len(values) / n), statistics.median(values))
        for name, values in segments.items()
        if len(values) >= 0.9 * n  # the usual path (a rare extra commit left out)
    }


def report(store: str, url: str, n: int) -> None:
    """Print ``timeline``'s segments and the time outside the commits."""
    found = timeline(url, n)
    print(f"{store}: {n} sequential checkouts, medians per segment")
    outside = 0.0
    for name, (count, median) in found.items():
        print(f"  {name:22s} x{count}  {median:8.1f} µs")
        if name != "commit -> committed":
            outside += count * median
    print(f"  outside the commits: {outside:.0f} µs per checkout")
