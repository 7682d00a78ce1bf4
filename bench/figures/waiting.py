"""Waiting cost: a worker's resident memory and threads while n workflows wait on a
durable sleep or a message."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.database import Database
from bench.workers import spawn_worker, stop_worker
from bench.workloads import build
from bench.workspace import Workspace


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process, from /proc/<pid>/status."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def _memory(pid: int) -> dict[str, float]:
    st = _proc_status(pid)
    return {
        "rss_mb": st["VmRSS"] / 1024,
        "peak_rss_mb": st["VmHWM"] / 1024,
        "threads": st["Threads"],
    }


def _suspended(db: Database) -> int:
    rows = db.rows(
        "SELECT count(*) FROM perdure_workflows WHERE status IN ('PENDING', 'RUNNING') "
        "AND owner IS NULL AND wake_at IS NOT NULL"
    )
    return int(rows[0][0])


def waiting(ws: Workspace, logs: Path, n: int) -> dict[str, Any]:
    """One ``perdure worker`` process; a client (App not launched) starts n workflows,
    half a durable sleep of an hour, half a ``recv`` with an hour's timeout. Once all n
    are suspended in the store: the worker's resident memory and threads, beside the
    same taken while it was idle before the first submission."""
    db = ws.new("waiting")
    client = build(db.url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        client.app.store  # migrate before the worker starts  # noqa: B018
        log_path = logs / f"{db.label}-worker.log"
        proc = spawn_worker(db.url, log_path)
        deadline = time.monotonic() + 60
        while db.executors() < 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        time.sleep(1.0)  # let it settle into its idle polling
        idle = _memory(proc.pid)
        peak_threads = idle["threads"]

        half = n // 2
        t0 = time.perf_counter()

        async def submit() -> None:
            await asyncio.gather(
                *(client.app.start_async(client.waiter, i) for i in range(half)),
                *(client.app.start_async(client.receiver, i) for i in range(half, n)),
            )

        asyncio.run(submit())
        submitted = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        while (suspended := _suspended(db)) < n:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"waiting: only {suspended} of {n} suspended after 120 s")
            peak_threads = max(peak_threads, _proc_status(proc.pid)["Threads"])
            time.sleep(0.05)
        to_suspend = time.perf_counter() - t0
        at_suspend = _memory(proc.pid)
        time.sleep(2.0)  # the worker polls on, holding nothing for the n
        settled = _memory(proc.pid)
        peak_threads = max(peak_threads, at_suspend["threads"], settled["threads"])
    finally:
        if proc is not None:
            stop_worker(proc)
        client.app.shutdown()
        final = db.summary()
        db.close()
    assert final.get("succeeded", 0) == 0 and final["recoveries"] == 0, final
    worker_settings = json.loads(os.environ.get("PERDURE_BENCH_APP_SETTINGS") or "{}")
    return {
        "n": n,
        # The worker's pool of workflow threads: it grows to this bound under load and
        # keeps its threads, whatever the number of workflows waiting.
        "max_threads": worker_settings.get("max_threads", client.app.settings.max_threads),
        "sleeping": half,
        "receiving": n - half,
        "idle": idle,
        "all_suspended": at_suspend,
        "settled_2s": settled,
        "peak_threads": peak_threads,
        "submit_s": submitted,
        "to_suspend_s": to_suspend,
        "rss_growth_kb_per_workflow": (settled["rss_mb"] - idle["rss_mb"]) * 1024 / n,
        "final": final,
    }
