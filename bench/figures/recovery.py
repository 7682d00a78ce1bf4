"""Recovery: checkouts interrupted by a worker's SIGKILL, then seconds from a new
worker's start until all are done."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from bench.workers import first_log_time, spawn_worker, stop_worker, submit
from bench.workloads import build
from bench.workspace import Workspace


def _recovery_once(ws: Workspace, logs: Path, n: int, kill_fraction: float) -> dict[str, Any]:
    db = ws.new("recovery")
    try:
        client = build(db.url)
        # No executor in this process: all n are PENDING, and durable.
        submit(client.app, client.checkout, n, "order")
        client.app.shutdown()

        # Worker A: let it get some way into the n, then kill it without warning.
        log_a = logs / f"{db.label}-worker-a.log"
        proc_a = spawn_worker(db.url, log_a)
        kill_at = int(n * kill_fraction)
        deadline = time.monotonic() + 120
        try:
            while db.count() < kill_at:
                if proc_a.poll() is not None:
                    raise RuntimeError(f"worker A exited early: {log_a.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("worker A made no progress in 120 s")
                time.sleep(0.005)
        finally:
            proc_a.send_signal(signal.SIGKILL)
            proc_a.wait()
        at_kill = db.summary()

        # Worker B: from its process start until all n are SUCCEEDED.
        log_b = logs / f"{db.label}-worker-b.log"
        wall_start = time.time()
        t0 = time.perf_counter()
        proc_b = spawn_worker(db.url, log_b)
        deadline = time.monotonic() + 120
        try:
            while True:
                done = db.count()
                if done >= n:
                    elapsed = time.perf_counter() - t0
                    break
                if proc_b.poll() is not None:
                    raise RuntimeError(f"worker B exited: {log_b.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"recovery: only {done} of {n} done after 120 s")
                time.sleep(0.01)
        finally:
            stop_worker(proc_b)
        started = first_log_time(log_b)
        final = db.summary()
    finally:
        db.close()
    assert final.get("succeeded") == n and final["steps"] == 4 * n, final
    return {
        "seconds": elapsed,
        "worker_startup_s": None if started is None else max(0.0, started - wall_start),
        "killed_after_succeeded": at_kill.get("succeeded", 0),
        "at_kill": at_kill,
        "final": final,
    }


def recovery(
    ws: Workspace, logs: Path, n: int, repeats: int, kill_fraction: float = 0.25
) -> dict[str, Any]:
    """n checkouts started; worker A killed with SIGKILL once ``kill_fraction`` of them
    finished; seconds from worker B's process start until all n are SUCCEEDED."""
    runs = [_recovery_once(ws, logs, n, kill_fraction) for _ in range(repeats)]
    middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {
        "n": n,
        "repeats": repeats,
        **middle,
        "seconds_max": max(r["seconds"] for r in runs),
        "seconds_all": [r["seconds"] for r in runs],
    }
