"""One store's run: the floor, then every figure bracketed by floor commits, measured
again when the PostgreSQL server restarted during it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import LOG_COUNT, log
from bench.cpu import Load
from bench.figures.multiprocess import multiprocess
from bench.figures.queue import queue
from bench.figures.recovery import recovery
from bench.figures.sequential import sequential
from bench.figures.steps import step_overhead
from bench.figures.throughput import (
    throughput_async,
    throughput_async_loop,
    throughput_sync,
    throughput_sync_gather,
)
from bench.figures.waiting import waiting
from bench.floor import floor_plain
from bench.probe import COMMITS
from bench.settings import MAX_RESTARTS, RESTART_PAUSE, SECTIONS, STORE_SECTIONS, STORES
from bench.workspace import Workspace


def run_store(
    ws: Workspace,
    counts: dict[str, int],
    only: set[str],
    complete: bool,
    worker_counts: list[int],
    logs: Path,
) -> dict[str, Any]:
    """Every figure of one store, each bracketed by floor commits."""
    results: dict[str, Any] = {
        **ws.describe(),
        "title": ws.title(),
        "diagnostics": {"commit_counter": COMMITS.installed},
    }
    started = time.perf_counter()
    whole = Load(ws.server_cpu)
    results["floor"] = {
        "commit_start": ws.floor_commit(counts["floor_commits"]),
        "plain": floor_plain(counts["floor_plain"]),
    }
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "sequential": lambda: sequential(ws, counts["seq_warmup"], counts["seq_timed"]),
        "steps": lambda: step_overhead(ws, counts["steps"], counts["steps_repeats"]),
        "throughput_sync": lambda: throughput_sync(
            ws, counts["throughput"], counts["throughput_repeats"]
        ),
        "throughput_sync_gather": lambda: throughput_sync_gather(
            ws, counts["throughput"], counts["throughput_repeats"]
        ),
        "throughput_async": lambda: throughput_async(
            ws, counts["throughput"], counts["throughput_repeats"]
        ),
        "throughput_async_loop": lambda: throughput_async_loop(
            ws, counts["throughput"], counts["throughput_repeats"]
        ),
        "recovery": lambda: recovery(ws, logs, counts["recovery"], counts["recovery_repeats"]),
        "waiting": lambda: waiting(ws, logs, counts["waiting"]),
        "multiprocess": lambda: multiprocess(
            ws, logs, worker_counts, counts["mp_n"], counts["mp_repeats"]
        ),
        "queue": lambda: queue(ws, logs, counts["queue_n"]),
    }
    floor_samples: list[float] = []
    for name in SECTIONS:
        if name not in only or ws.store not in STORE_SECTIONS.get(name, STORES):
            continue
        restarts = 0
        while True:
            log(f"[{ws.store}] running {name} ...")
            t0 = time.perf_counter()
            load = Load(ws.server_cpu)
            warnings0 = LOG_COUNT.count
            epoch = ws.epoch()
            error: Exception | None = None
            try:
                before = ws.floor_commit(counts["floor_bracket"])
                section = sections[name]()
                after = ws.floor_commit(counts["floor_bracket"])
            except Exception as exc:  # noqa: BLE001 - re-raised unless the server restarted
                error = exc
            restarted = ws.epoch() != epoch
            if not restarted:
                if error is not None:
                    raise error
                break
            # Another session restarted the PostgreSQL server during the figure (crash
            # tests on a shared machine): the figure means nothing, measure it again.
            restarts += 1
            log(f"  the PostgreSQL server restarted during {name}; measuring it again")
            if restarts >= MAX_RESTARTS:
                raise RuntimeError(
                    f"{name}: the PostgreSQL server restarted {restarts} times during it"
                ) from error
            ws.wait_for_server()
            time.sleep(RESTART_PAUSE)
        results[name] = section
        section["foreign_cores"] = load.foreign_cores()
        section["server_restarts"] = restarts
        section["log_warnings"] = LOG_COUNT.count - warnings0
        # The floor of this figure's ratios: commits measured right before and after it.
        bracket = before.pop("samples_us") + after.pop("samples_us")
        floor_samples.extend(bracket)
        section["floor_us"] = statistics.median(bracket)
        section["floor_before_us"] = before["median_us"]
        section["floor_after_us"] = after["median_us"]
        section["elapsed_s"] = time.perf_counter() - t0
        log(
            f"  {name} took {section['elapsed_s']:.1f} s "
            f"(other processes used {section['foreign_cores']:.2f} cores meanwhile)"
        )
    if complete:
        results["floor"]["commit_end"] = ws.floor_commit(counts["floor_commits"])
    # The run's overall floor: the median over every floor sample of the run.
    for key in ("commit_start", "commit_end"):
        floor_samples.extend(results["floor"].get(key, {}).pop("samples_us", []))
    results["floor"]["commit_us"] = statistics.median(floor_samples)
    results["foreign_cores"] = whole.foreign_cores()
    results["server_cores"] = (
        whole.server_seconds() / (time.perf_counter() - whole.wall0) if ws.server_cpu else None
    )
    results["elapsed_s"] = time.perf_counter() - started
    if "sequential" in results:
        results["sequential"].pop("samples_ms", None)
    return results
