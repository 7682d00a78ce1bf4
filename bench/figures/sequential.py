"""Sequential latency: one checkout at a time, started and waited for (p50, p99)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import percentile
from bench.cpu import CPU
from bench.probe import COMMITS
from bench.workloads import build
from bench.workspace import Workspace


def sequential(ws: Workspace, warmup: int, timed: int) -> dict[str, Any]:
    db = ws.new("sequential")
    try:
        w = build(db.url)
        app = w.app
        samples: list[float] = []
        with app:
            for i in range(warmup):
                app.run(w.checkout, f"warm-{i}")
            COMMITS.reset()
            cpu = CPU(ws)
            wall0 = time.perf_counter()
            for i in range(timed):
                t0 = time.perf_counter_ns()
                result = app.run(w.checkout, f"order-{i}")
                samples.append((time.perf_counter_ns() - t0) / 1e6)
                assert result == {"order": f"order-{i}", "step": "confirm_order"}, result
            wall = time.perf_counter() - wall0
            used = cpu.stop(timed)
            commits = COMMITS.summary(timed)
    finally:
        db.close()
    ordered = sorted(samples)
    return {
        "warmup": warmup,
        "n": timed,
        "p50_ms": statistics.median(ordered),
        "p99_ms": percentile(ordered, 99),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "cpu_ms_per_checkout": used["cpu_ms"],
        "server_cpu_ms_per_checkout": used["server_cpu_ms"],
        "cpu_cores": (used["cpu_s"] or 0.0) / wall,
        "commits": commits,
        "samples_ms": samples,
    }
