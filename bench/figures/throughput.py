"""Throughput in one process, four ways: a sync-def checkout driven by a plain
``app.start`` loop, the same submitted at once with ``gather(start_async)``, and an
async-def checkout both ways."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bench.cpu import CPU
from bench.probe import COMMITS
from bench.workloads import build
from bench.workspace import Workspace


def _drive_sync_loop(app: Any, fn: Any, n: int) -> None:
    handles = [app.start(fn, f"order-{i}") for i in range(n)]
    for handle in handles:
        handle.result(timeout=120)


def _drive_gather(app: Any, fn: Any, n: int) -> None:
    async def main() -> None:
        handles = await asyncio.gather(*(app.start_async(fn, f"order-{i}") for i in range(n)))
        await asyncio.gather(*(handle.result_async(timeout=120) for handle in handles))

    asyncio.run(main())


def _throughput_once(
    ws: Workspace, label: str, n: int, fn_name: str, drive: Callable[[Any, Any, int], None]
) -> dict[str, Any]:
    db = ws.new(label)
    try:
        w = build(db.url)
        app = w.app
        fn = getattr(w, fn_name)
        with app:
            app.run(fn, "warm-up")
            COMMITS.reset()
            cpu = CPU(ws)
            t0 = time.perf_counter()
            drive(app, fn, n)
            wall = time.perf_counter() - t0
            used = cpu.stop(n)
            commits = COMMITS.summary(n)
        done = db.count()
    finally:
        db.close()
    assert done == n + 1, f"{label}: {done} of {n + 1} SUCCEEDED"
    return {
        "wall_s": wall,
        "per_s": n / wall,
        "cpu_ms_per_checkout": used["cpu_ms"],
        "server_cpu_ms_per_checkout": used["server_cpu_ms"],
        "cpu_cores": (used["cpu_s"] or 0.0) / wall,
        "commits": commits,
    }


def _throughput(
    ws: Workspace,
    label: str,
    n: int,
    repeats: int,
    fn_name: str,
    drive: Callable[[Any, Any, int], None],
) -> dict[str, Any]:
    runs = [_throughput_once(ws, label, n, fn_name, drive) for _ in range(repeats)]
    middle = sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]
    return {
        "n": n,
        "repeats": repeats,
        **middle,
        "per_s_all": [r["per_s"] for r in runs],
    }


def throughput_sync(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Sync-def checkout, sync client: a loop of app.start(), then each handle.result()."""
    return _throughput(ws, "throughput-sync", n, repeats, "checkout", _drive_sync_loop)


def throughput_sync_gather(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Sync-def checkout submitted all at once: gather(start_async), gather(result_async)."""
    return _throughput(ws, "throughput-sync-gather", n, repeats, "checkout", _drive_gather)


def throughput_async_loop(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Async-def checkout started by plain synchronous code: a loop of app.start() (each
    returns once its start is durable), then each handle.result()."""
    return _throughput(ws, "throughput-async-loop", n, repeats, "checkout_async", _drive_sync_loop)


def throughput_async(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Async-def checkout with async steps: gather(start_async), gather(result_async)."""
    return _throughput(ws, "throughput-async", n, repeats, "checkout_async", _drive_gather)
