"""Diagnostics for the benchmark (not part of perdure): how many transactions perdure's
group committer runs, and, inside a ``perdure worker`` process, how many workflows it
finished and how much CPU it used.

Both wrap private internals (``GroupCommitter._run``, ``Executor._finish``): if perdure's
internals changed and they are gone, the counts are just not reported.

A worker reports through files, without signals: when ``PERDURE_BENCH_PROBE_DIR`` is set
(``bench/workloads.py`` calls ``serve_worker_probe``), a daemon thread looks every 5 ms
for ``<dir>/request-<n>`` and answers with ``<dir>/<pid>-<n>.json`` (cumulative counts
and CPU seconds), so that the benchmark can take the difference over a timed window.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import perdure as perdure_module


class CommitCounter:
    """The size of every transaction perdure's group committer runs (one ``_run`` call =
    one transaction)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.installed = False
        try:
            from perdure.storage._batch import GroupCommitter
        except ImportError:
            return
        original = getattr(GroupCommitter, "_run", None)
        if original is None:
            return
        sizes = self.sizes

        def _run(committer: Any, conn: Any, batch: list[Any], *args: Any, **kwargs: Any) -> Any:
            sizes.append(len(batch))
            return original(committer, conn, batch, *args, **kwargs)

        GroupCommitter._run = _run  # type: ignore[method-assign,assignment]
        self.installed = True

    def reset(self) -> None:
        self.sizes.clear()

    def summary(self, workflows: int) -> dict[str, Any] | None:
        if not self.installed or not self.sizes:
            return None
        return summarize(len(self.sizes), sum(self.sizes), max(self.sizes), workflows)


def summarize(transactions: int, writes: int, max_batch: int, workflows: int) -> dict[str, Any]:
    return {
        "transactions": transactions,
        "writes": writes,
        "mean_batch": writes / transactions if transactions else 0.0,
        "max_batch": max_batch,
        "commits_per_workflow": transactions / workflows if workflows else 0.0,
        "writes_per_workflow": writes / workflows if workflows else 0.0,
    }


COMMITS = CommitCounter()


class Completions:
    """Workflows this process's executor finished (outcome recorded), by workflow name."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.installed = False
        try:
            from perdure._worker import Executor
        except ImportError:
            try:  # revisions before the worker package (bench/compare.py runs them too)
                from perdure._executor import Executor  # type: ignore[no-redef]
            except ImportError:
                return
        original = getattr(Executor, "_finish", None)
        if original is None:
            return
        counts, lock = self.counts, self._lock

        def _finish(executor: Any, run: Any, outcome: Any, exc: Any) -> Any:
            if outcome is not None:
                with lock:
                    counts[run.definition.name] += 1
            return original(executor, run, outcome, exc)

        Executor._finish = _finish  # type: ignore[method-assign,assignment]
        self.installed = True

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def serve_worker_probe(directory: str) -> None:
    """In a worker process: answer the benchmark's snapshot requests (see the module)."""
    folder = Path(directory)
    completions = Completions()
    pid = os.getpid()
    seen = 0

    def snapshot() -> dict[str, Any]:
        nonlocal seen
        times = os.times()
        sizes = list(COMMITS.sizes)
        recent, seen = sizes[seen:], len(sizes)
        return {
            "pid": pid,
            # Which perdure the worker imported: the benchmark checks it is the one it
            # measures itself (an exported revision, for bench/compare.py).
            "perdure_path": str(Path(perdure_module.__file__).resolve().parent),
            "cpu_s": times.user + times.system,
            "completed": completions.snapshot(),
            "transactions": len(sizes),
            "writes": sum(sizes),
            # The largest transaction since the previous snapshot.
            "max_batch": max(recent, default=0),
        }

    def serve() -> None:
        for n in itertools.count(1):
            request = folder / f"request-{n}"
            while not request.exists():
                time.sleep(0.005)
            data = snapshot()
            tmp = folder / f".{pid}-{n}.tmp"
            tmp.write_text(json.dumps(data))
            tmp.rename(folder / f"{pid}-{n}.json")

    threading.Thread(target=serve, name="bench-probe", daemon=True).start()
