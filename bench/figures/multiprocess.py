"""Multi-process throughput (PostgreSQL): K ``perdure worker`` processes claim checkouts
that a client whose App is not launched starts, all at once (``gather(start_async)``) or,
with one worker, also one at a time in a plain ``app.start`` loop (the client a web
handler would be)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import log
from bench.cpu import Load
from bench.probe import summarize
from bench.workers import perdure_root, spawn_worker, stop_worker, submit
from bench.workloads import build
from bench.workspace import Workspace


def _probe_snapshot(
    probe_dir: Path, n: int, pids: list[int], timeout: float = 10.0
) -> dict[int, dict[str, Any]]:
    """Ask every worker for its counters (see bench/probe.py) and wait for the answers."""
    (probe_dir / f"request-{n}").touch()
    deadline = time.monotonic() + timeout
    answers: dict[int, dict[str, Any]] = {}
    while len(answers) < len(pids):
        for pid in pids:
            path = probe_dir / f"{pid}-{n}.json"
            if pid not in answers and path.exists():
                answers[pid] = json.loads(path.read_text())
        if len(answers) < len(pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {set(pids) - set(answers)} did not answer the probe")
            time.sleep(0.002)
    return answers


def _check_imports(answers: dict[int, dict[str, Any]]) -> None:
    """The workers must measure the perdure this process imported (e.g. an exported
    revision), not another copy found on their path."""
    mine = str(perdure_root() / "perdure")
    for pid, answer in answers.items():
        theirs = answer.get("perdure_path", mine)
        if theirs != mine:
            raise RuntimeError(f"worker {pid} imported perdure from {theirs}, not {mine}")


def _submit_loop(app: Any, fn: Any, n: int, prefix: str) -> None:
    """Start n workflows one at a time; each ``app.start`` returns once its start is
    durable."""
    for i in range(n):
        app.start(fn, f"{prefix}-{i}")


def _multiprocess_once(
    ws: Workspace, logs: Path, workers: int, fn_name: str, n: int, warmup: int, loop: bool
) -> dict[str, Any]:
    db = ws.new(f"mp-{fn_name}-{workers}{'-loop' if loop else ''}")
    probe_dir = Path(tempfile.mkdtemp(prefix="perdure-bench-probe-"))
    procs: list[subprocess.Popen[bytes]] = []
    client = build(db.url)
    try:
        fn = getattr(client, fn_name)
        client.app.store  # migrate before the workers start  # noqa: B018
        for k in range(workers):
            procs.append(
                spawn_worker(
                    db.url,
                    logs / f"{db.label}-worker-{k}.log",
                    {"PERDURE_BENCH_PROBE_DIR": str(probe_dir)},
                )
            )
        deadline = time.monotonic() + 60
        while db.executors() < workers:
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not all start")
            time.sleep(0.02)
        # Warm-up: imports, thread pools, prepared statements, type adapters.
        submit(client.app, fn, warmup, "warm")
        while db.count() < warmup:
            if time.monotonic() > deadline:
                raise RuntimeError("warm-up did not finish in time")
            time.sleep(0.01)
        pids = [p.pid for p in procs]
        before = _probe_snapshot(probe_dir, 1, pids)
        _check_imports(before)
        load = Load(ws.server_cpu)
        own0 = time.process_time()
        t0 = time.perf_counter()
        (_submit_loop if loop else submit)(client.app, fn, n, "order")
        submitted = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        while (done := db.count()) < warmup + n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"multiprocess: only {done - warmup} of {n} done after 120 s")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited during the multi-process figure")
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        own = time.process_time() - own0
        server = load.server_seconds() if ws.server_cpu else None
        after = _probe_snapshot(probe_dir, 2, pids)
    finally:
        for proc in procs:
            stop_worker(proc)
        client.app.shutdown()
        final = db.summary()
        db.close()
        shutil.rmtree(probe_dir, ignore_errors=True)
    assert final.get("succeeded") == warmup + n, final
    per_worker = []
    for pid in pids:
        b, a = before[pid], after[pid]
        per_worker.append(
            {
                "pid": pid,
                "completed": a["completed"].get(fn_name, 0) - b["completed"].get(fn_name, 0),
                "cpu_s": a["cpu_s"] - b["cpu_s"],
                "transactions": a["transactions"] - b["transactions"],
                "writes": a["writes"] - b["writes"],
                "max_batch": a["max_batch"],
            }
        )
    transactions = sum(w["transactions"] for w in per_worker)
    writes = sum(w["writes"] for w in per_worker)
    worker_cpu = sum(w["cpu_s"] for w in per_worker)
    return {
        "workers": workers,
        "workflow": fn_name,
        "submission": "loop" if loop else "gather",
        "n": n,
        "wall_s": wall,
        "submit_s": submitted,
        "per_s": n / wall,
        "completed_by_worker": [w["completed"] for w in per_worker],
        "worker_cpu_ms_per_checkout": worker_cpu * 1000 / n,
        "client_cpu_ms_per_checkout": own * 1000 / n,
        "server_cpu_ms_per_checkout": None if server is None else server * 1000 / n,
        "cores_used": (worker_cpu + own + (server or 0.0)) / wall,
        "foreign_cores": load.foreign_cores(),
        "worker_commits": summarize(
            transactions, writes, max((w["max_batch"] for w in per_worker), default=0), n
        ),
        "per_worker": per_worker,
    }


def multiprocess(
    ws: Workspace, logs: Path, worker_counts: list[int], n: int, repeats: int
) -> dict[str, Any]:
    """K worker processes share n checkouts started by a client whose App is not
    launched (so all are PENDING and claimed by the workers), for the sync-def and the
    async-def checkout: workflows/s from the first submission until all n are done.
    With one worker, the client also starts them in a plain ``app.start`` loop."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for fn_name in ("checkout", "checkout_async"):
        variants = [(w, False) for w in worker_counts] + ([(1, True)] if 1 in worker_counts else [])
        for workers, loop in variants:
            key = f"{fn_name}/{workers}{'/loop' if loop else ''}"
            runs[key] = []
            for _ in range(repeats):
                how = "app.start loop" if loop else "gather"
                log(f"  {workers} worker(s), {fn_name}, {how} ...")
                runs[key].append(
                    _multiprocess_once(ws, logs, workers, fn_name, n, 10 * workers, loop)
                )
    medians = {}
    for key, tries in runs.items():
        middle = sorted(tries, key=lambda r: r["per_s"])[len(tries) // 2]
        medians[key] = {**middle, "per_s_all": [r["per_s"] for r in tries]}
    return {"n": n, "repeats": repeats, "workers": worker_counts, "runs": medians}
