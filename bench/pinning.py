"""``bench/run.py --pin``: each process of the benchmark on a core of its own.

A perdure process runs its Python on one core at a time (the interpreter lock), but its
threads wake each other all the time: the writer wakes the workflows whose records it
committed, a workflow wakes the writer, the event loop wakes a pool thread. Left to the
scheduler, the woken thread often lands on the other core, and on the 2-core VM of
docs/performance.md a wake-up across cores costs 1.5-2 times one on the same core
(``bench/explain.py wakeups``). With ``--pin`` the benchmark's own process
(the in-process figures, and the client of the multi-process figure) is confined to the
first core it may use, and each worker process it starts to the next one, round robin,
as ``taskset -c N perdure worker ...`` would deploy them. The database server is left
alone. See docs/performance.md, section "One core per worker process".
"""

from __future__ import annotations

import os
import shutil

#: The cores this run was allowed at its start, in order; empty when not pinning.
_cores: list[int] = []
#: How many worker processes were given a core so far (the round robin's position).
_given = 0


def pin_this_process() -> int:
    """Confine this process (its threads to come) to its first allowed core; returns it.
    Call it before any thread starts: a thread keeps the affinity it was created with."""
    global _cores
    if not hasattr(os, "sched_setaffinity") or shutil.which("taskset") is None:
        raise SystemExit("--pin needs Linux's sched_setaffinity and taskset (util-linux)")
    _cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cores[0]})
    return _cores[0]


def worker_prefix() -> list[str]:
    """The command prefix that puts the next worker process on a core of its own (the
    cores after this process's, round robin), or nothing when not pinning."""
    global _given
    if not _cores:
        return []
    _given += 1
    core = _cores[_given % len(_cores)]
    return ["taskset", "-c", str(core)]


def pinned() -> list[int]:
    """The cores of a pinned run (this process's first), or [] when not pinning."""
    return list(_cores)
