"""Step overhead: one workflow of n trivial steps, wall time per step."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.cpu import CPU
from bench.probe import COMMITS
from bench.workloads import build
from bench.workspace import Workspace


def step_overhead(ws: Workspace, n_steps: int, repeats: int) -> dict[str, Any]:
    db = ws.new("steps")
    try:
        w = build(db.url)
        app = w.app
        per_step: list[float] = []
        cpu_per_step: list[float] = []
        server_per_step: list[float] = []
        with app:
            app.run(w.many_steps, 20)  # warm-up: store open, pool thread started
            COMMITS.reset()
            for _ in range(repeats):
                cpu = CPU(ws)
                t0 = time.perf_counter_ns()
                assert app.run(w.many_steps, n_steps) == n_steps
                per_step.append((time.perf_counter_ns() - t0) / 1000 / n_steps)
                used = cpu.stop(n_steps)
                cpu_per_step.append((used["cpu_ms"] or 0.0) * 1000)
                if used["server_cpu_ms"] is not None:
                    server_per_step.append(used["server_cpu_ms"] * 1000)
            commits = COMMITS.summary(repeats)
        summary = db.summary()
    finally:
        db.close()
    assert summary["steps"] == 20 + repeats * n_steps, summary
    return {
        "steps": n_steps,
        "repeats": repeats,
        "per_step_us": statistics.median(per_step),
        "per_step_us_all": per_step,
        "cpu_us_per_step": statistics.median(cpu_per_step),
        "server_cpu_us_per_step": statistics.median(server_per_step) if server_per_step else None,
        "commits": commits,
    }
