"""perdure's benchmark on SQLite and PostgreSQL: the workload, floor and targets of
../shared/BENCHMARK.md.

    .venv/bin/python bench/run.py                          # full run, both stores (make bench)
    .venv/bin/python bench/run.py --store sqlite           # one store (the option repeats)
    .venv/bin/python bench/run.py --store sqlite --synchronous normal
    .venv/bin/python bench/run.py --quick                  # reduced counts, both stores
    .venv/bin/python bench/run.py --store postgresql --only multiprocess
    .venv/bin/python bench/run.py --postgres-url postgresql://user@host:5432/db

Every figure runs in a fresh database: a new SQLite file in a temporary folder, or a new
schema ``bench_<hex>`` of the PostgreSQL database (perdure's ``?schema=``), dropped
afterwards. Each figure is printed beside the floor measured right before and after it
in the same run (one INSERT + COMMIT: into SQLite in WAL with the same ``synchronous``;
into a plain table over TCP with psycopg 3, autocommit off, for PostgreSQL), so that the
ratios hold on a noisy machine. Without ``--store``, both stores run, and PostgreSQL is
skipped with a warning when it cannot be reached.

The waiting-cost figure starts n workflows (half a durable sleep of an hour, half a
``recv`` with an hour's timeout) from a client against one ``perdure worker`` process and,
once all are suspended in the store, reads the worker's VmRSS and Threads from
/proc/<pid>/status, beside the same read while it was idle before the first submission.

PostgreSQL also gets the multi-process figure: 1, 2 and 4 ``perdure worker
bench.workloads:app`` processes share checkouts that a client (whose App is not
launched) starts; workflows/s from the first submission until all are done.

Results go to bench/results/latest.json (and, for a full run, to
bench/results/sqlite-<synchronous>.json and bench/results/postgresql.json as well).

This file is the entry point (as is ``python -m bench``); the benchmark is the package
``bench``: ``cli`` (options, output), ``runner`` (one store's run), ``figures/`` (one
module per figure), ``floor``, ``store_sqlite`` and ``store_postgres`` (the workspaces),
``cpu`` (CPU and load from /proc), ``report`` (the tables), ``machine``. To compare two
revisions of perdure, see bench/compare.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ itself first on sys.path, where the package's
# modules would shadow top-level modules of the same name: put the checkout there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
