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
the statement sent to its answer read. That time is split by the transaction that
carried the start (``GroupCommitter._commit``): whether the loop's thread led it (the
committer was free) or the start was queued for the writer thread, and the medians of
the wait before that transaction, the transaction itself (with how many writes it
carried) and the wait after it until the loop's thread had its answer.
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from typing import Any

from bench.workloads import build
from bench.workspace import Workspace
from perdure.storage._batch import GroupCommitter

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
        carried = _Carriers()

        def timed(*args: Any, **kwargs: Any) -> Any:
            carried.begin()
            t0 = time.perf_counter()
            future = create(*args, **kwargs)
            future.result()
            t1 = time.perf_counter()
            commits.append(t1 - t0)
            carried.end(t0, t1)
            return future

        store.create_workflow = timed  # type: ignore[method-assign]
        handles = []
        t0 = time.perf_counter()
        with carried:
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
        f"{statistics.median(commits) * 1e6:5.0f} µs\n{carried.report()}"
    )


class _Carriers:
    """Which transaction carried each start of the loop's thread, and when: a wrapper of
    ``GroupCommitter._enqueue`` notes the start's write, one of ``_commit`` the batch that
    holds it (while the block is entered)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.write: set[int] | None = None  # the IDs of the start's writes, once queued
        self.found: tuple[float, float, bool, int] | None = None
        self.rows: list[tuple[bool, float, float, float, int]] = []

    def begin(self) -> None:
        self.write, self.found = None, None

    def end(self, sent: float, answered: float) -> None:
        if self.found is not None:
            began, ended, led, size = self.found
            self.rows.append((led, began - sent, ended - began, answered - ended, size))

    def __enter__(self) -> None:
        enqueue, commit = GroupCommitter._enqueue, GroupCommitter._commit
        self._saved = enqueue, commit
        carriers = self

        def noted(committer: Any, item: Any) -> None:
            if threading.get_ident() == carriers.thread and carriers.write is None:
                carriers.write = {id(w) for w in (item if isinstance(item, tuple) else (item,))}
            enqueue(committer, item)

        def timed(committer: Any, batch: list[Any]) -> None:
            began = time.perf_counter()
            try:
                commit(committer, batch)
            finally:
                ours = carriers.write
                if ours is not None and any(id(w) in ours for w in batch):
                    led = threading.get_ident() == carriers.thread
                    carriers.found = (began, time.perf_counter(), led, len(batch))

        GroupCommitter._enqueue = noted  # type: ignore[method-assign]
        GroupCommitter._commit = timed  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        GroupCommitter._enqueue, GroupCommitter._commit = self._saved  # type: ignore[method-assign]

    def report(self) -> str:
        lines = []
        for led, label in ((True, "led by the loop"), (False, "queued for the writer")):
            rows = [row for row in self.rows if row[0] == led]
            if not rows:
                continue
            before, during, after = (
                statistics.median(row[i] for row in rows) * 1e6 for i in (1, 2, 3)
            )
            size = statistics.mean(row[4] for row in rows)
            lines.append(
                f"      {label:22s} {len(rows):5d} starts: before its transaction {before:4.0f}"
                f" µs, the transaction {during:4.0f} µs ({size:.1f} writes), after {after:4.0f} µs"
            )
        return "\n".join(lines)


def start_latency(ws: Workspace, store: str, n: int, cpu_us: float) -> None:
    print(f"{store}: a plain app.start loop of {n}, beside workflows of each kind")
    for kind in KINDS:
        print(_once(ws, kind, n, cpu_us), flush=True)
