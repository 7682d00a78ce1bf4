"""The floor of ../shared/BENCHMARK.md: (i) the checkout's four steps as plain Python
calls, and the summary of (ii) a store's INSERT + COMMIT samples (measured by the
workspaces, bench/store_sqlite.py and bench/store_postgres.py)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import percentile
from bench.workloads import plain_checkout


def floor_summary(
    n: int, samples: list[float], cpu_s: float, warmup: int, server_s: float | None
) -> dict[str, Any]:
    timed = samples[warmup:]
    ordered = sorted(timed)
    return {
        "n": n,
        "median_us": statistics.median(ordered),
        "p90_us": percentile(ordered, 90),
        "min_us": ordered[0],
        "cpu_us": cpu_s * 1e6 / n,
        "server_cpu_us": None if server_s is None else server_s * 1e6 / n,
        "samples_us": timed,
    }


def floor_plain(n: int) -> dict[str, Any]:
    """The four checkout steps as plain Python calls."""
    t0 = time.perf_counter_ns()
    for i in range(n):
        plain_checkout(i)
    per_checkout = (time.perf_counter_ns() - t0) / 1000 / n
    return {"n": n, "checkout_us": per_checkout, "step_us": per_checkout / 4}
