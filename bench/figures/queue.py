"""Queues: n checkouts through a queue with ``concurrency=50`` to 1 and 4 ``perdure
worker`` processes, beside the same run with no queue (``bench/run.py --only queue``).

A client whose App is not launched starts all n at once; the workers claim them. For
each workflow, start-to-run latency is its first step's start (``perdure_steps.started_at``)
minus its start (``created_at``): the time it waited for a worker, and in the queue;
p50 and p99 over the n. Workflows/s from the first submission until all n are done.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import log
from bench.workers import spawn_worker, stop_worker
from bench.workloads import QUEUE, QUEUE_ENV, build
from bench.workspace import Workspace

#: The queue's limit across every worker (issue 11's figure).
CONCURRENCY = 50
_LATENCIES = (
    "SELECT w.created_at, min(s.started_at) FROM perdure_workflows w "
    "JOIN perdure_steps s ON s.workflow_id = w.id GROUP BY w.id, w.created_at"
)


def _submit(app: Any, fn: Any, n: int, queued: bool) -> None:
    starter = app.options(queue=QUEUE) if queued else app.options()

    async def main() -> None:
        await asyncio.gather(*(starter.start_async(fn, f"order-{i}") for i in range(n)))

    asyncio.run(main())


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _queue_once(ws: Workspace, logs: Path, workers: int, n: int, queued: bool) -> dict[str, Any]:
    label = f"queue-{'q' if queued else 'none'}-{workers}"
    db = ws.new(label)
    env = {QUEUE_ENV: str(CONCURRENCY)}
    client = build(db.url, queue_concurrency=CONCURRENCY)
    procs = []
    try:
        client.app.store  # migrate before the workers start  # noqa: B018
        for k in range(workers):
            procs.append(spawn_worker(db.url, logs / f"{db.label}-worker-{k}.log", env))
        deadline = time.monotonic() + 60
        while db.executors() < workers:
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not all start")
            time.sleep(0.02)
        t0 = time.perf_counter()
        _submit(client.app, client.checkout, n, queued)
        deadline = time.monotonic() + 300
        while (done := db.count()) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue figure: only {done} of {n} done after 300 s")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited during the queue figure")
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        latencies = [(started - created) * 1000 for created, started in db.rows(_LATENCIES)]
    finally:
        for proc in procs:
            stop_worker(proc)
        client.app.shutdown()
        db.close()
    return {
        "workers": workers,
        "queue": queued,
        "n": n,
        "wall_s": wall,
        "per_s": n / wall,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p99_ms": _percentile(latencies, 0.99),
    }


def queue(
    ws: Workspace, logs: Path, n: int, worker_counts: tuple[int, ...] = (1, 4)
) -> dict[str, Any]:
    """The queue figure: for 1 and 4 workers, n checkouts with no queue and through a
    queue of ``concurrency=50``."""
    runs = {}
    for workers in worker_counts:
        for queued in (False, True):
            log(f"  {workers} worker(s), {'queue' if queued else 'no queue'} ...")
            run = _queue_once(ws, logs, workers, n, queued)
            runs[f"{'queue' if queued else 'none'}/{workers}"] = run
            log(
                f"    {run['per_s']:.0f} workflows/s, start-to-run p50 "
                f"{run['latency_p50_ms']:.0f} ms, p99 {run['latency_p99_ms']:.0f} ms"
            )
    return {"n": n, "concurrency": CONCURRENCY, "runs": runs}
