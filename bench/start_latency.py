"""What a plain ``app.start`` loop waits for (``bench/explain.py start-latency``).

A loop of starts waits for each start's commit in turn, so its rate is one over the
latency of one ``app.start``. This measures that latency alone (an App that runs no
workflows: a client) and with the workflows running in the same process, each kind
doing a known amount of work besides its outcome's write:

- ``noop``: nothing (only the outcome's write);
- ``checkout``: the benchmark's checkout (four steps);
- ``spin``: ``--cpu`` µs of pure Python, which holds the interpreter lock;
- ``burn``: ``--cpu`` µs of hashing in C, which releases the lock (CPU, no lock).

``spin`` against ``burn`` tells the interpreter lock from the cores: if a start waits
as long beside ``burn`` as beside ``spin``, it waits for a core (the machine's CPU),
not for the lock. ``store.create_workflow`` is timed too: the start's commit, from
the statement sent to its answer read.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from typing import Any

from bench.workloads import build
from bench.workspace import Workspace

KINDS = ("client", "noop", "checkout", "spin", "burn")
_BUFFER = b"x" * 200_000


def _register(app: Any, cpu_us: float) -> dict[str, Any]:
    @app.workflow(name="latency_noop")
    def noop(order: str) -> str:
        return order

    @app.workflow(name="latency_spin")
    def spin(order: str) -> str:
        until = time.thread_time() + cpu_us / 1e6
        while time.thread_time() < until:
            pass
        return order

    @app.workflow(name="latency_burn")
    def burn(order: str) -> str:
        until = time.thread_time() + cpu_us / 1e6
        while time.thread_time() < until:
            hashlib.sha256(_BUFFER).digest()  # ~0.1 ms in C, the lock released
        return order

    return {"noop": noop, "spin": spin, "burn": burn}


def _once(ws: Workspace, kind: str, n: int, cpu_us: float) -> str:
    db = ws.new(f"latency-{kind}")
    w = build(db.url)
    app = w.app
    fn = w.checkout if kind in ("client", "checkout") else _register(app, cpu_us)[kind]
    launched = kind != "client"
    commits: list[float] = []
    starts: list[float] = []
    try:
        if launched:
            app.launch()
        app.start(fn, "warm-up")
        store = app.store
        create = store.create_workflow

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            future = create(*args, **kwargs)
            future.result()
            commits.append(time.perf_counter() - t0)
            return future

        store.create_workflow = timed  # type: ignore[method-assign]
        handles = []
        t0 = time.perf_counter()
        for i in range(n):
            t1 = time.perf_counter()
            handles.append(app.start(fn, f"order-{i}"))
            starts.append(time.perf_counter() - t1)
        wall = time.perf_counter() - t0
        if launched:
            for handle in handles:
                handle.result(timeout=120)
    finally:
        app.shutdown()
        db.close()
    work = f" ({cpu_us:.0f} µs)" if kind in ("spin", "burn") else ""
    return (
        f"  {kind + work:16s} {n / wall:6.0f} starts/s   app.start p50 "
        f"{statistics.median(starts) * 1e6:5.0f} µs   its commit p50 "
        f"{statistics.median(commits) * 1e6:5.0f} µs"
    )


def start_latency(ws: Workspace, store: str, n: int, cpu_us: float) -> None:
    print(f"{store}: a plain app.start loop of {n}, beside workflows of each kind")
    for kind in KINDS:
        print(_once(ws, kind, n, cpu_us), flush=True)
