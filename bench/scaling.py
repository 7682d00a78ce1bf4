"""What one workflow costs PostgreSQL, measured, and how far one server goes: a load model.

``python bench/scaling.py measure`` runs checkouts (``bench.workloads``: four steps)
against a database of its own on the PostgreSQL server, so that every counter read is
the benchmark's alone: the database's commits and row operations
(``pg_stat_database``, ``pg_stat_user_tables``), the WAL it wrote (``pg_walinspect``:
the records that touch its relations, and the commit records of its transactions), and
the CPU of its server processes (``/proc`` of the backends connected to it). It writes
``bench/results/scaling.json``.

``python bench/scaling.py model --cores 16 ...`` reads that file and says how many
workflows per second one server of that size sustains, and which resource runs out
first; every input is an option, so anyone can rerun it for their machine. See
docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cpu import proc_stat  # noqa: E402
from bench.workloads import build  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scaling.json"
DATABASE = "perdure_scaling"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: Seconds until every backend has reported its statistics (PostgreSQL 15: at most once a
#: second while busy, after 10 s when idle).
_STATS_DELAY = 11.0


def _connect(url: str, autocommit: bool = True) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=autocommit)


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _counters(admin: Any, dboid: int) -> dict[str, float]:
    row = admin.execute(
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, tup_fetched "
        "FROM pg_stat_database WHERE datid = %s",
        (dboid,),
    ).fetchone()
    keys = ("commits", "rows_inserted", "rows_updated", "rows_deleted", "rows_fetched")
    return dict(zip(keys, (float(v) for v in row), strict=True))


def _backend_cpu(admin: Any, database: str) -> float:
    pids = [
        r[0]
        for r in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    ]
    total = 0.0
    for pid in pids:
        stat = proc_stat(pid)
        if stat is not None:
            total += stat[1]
    return total


def _wal(db: Any, start: str, end: str, dboid: int) -> dict[str, float]:
    """WAL records and bytes of this database between two LSNs: records that touch its
    relations, and the commit records of the transactions that wrote them."""
    like = f"%/{dboid}/%"
    row = db.execute(
        """
        WITH r AS (SELECT * FROM pg_get_wal_records_info(%s::pg_lsn, %s::pg_lsn)),
             ours AS (SELECT DISTINCT xid FROM r WHERE block_ref LIKE %s AND xid <> '0')
        SELECT count(*), coalesce(sum(record_length), 0), coalesce(sum(fpi_length), 0)
        FROM r
        WHERE block_ref LIKE %s
           OR (resource_manager = 'Transaction' AND xid IN (SELECT xid FROM ours))
        """,
        (start, end, like, like),
    ).fetchone()
    return {"records": float(row[0]), "bytes": float(row[1]), "fpi_bytes": float(row[2])}


def _tables(db: Any) -> dict[str, dict[str, int]]:
    rows = db.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, idx_scan, seq_scan "
        "FROM pg_stat_user_tables WHERE schemaname = 'perdure' ORDER BY relname"
    ).fetchall()
    keys = ("inserted", "updated", "hot_updated", "deleted", "index_scans", "seq_scans")
    return {r[0]: dict(zip(keys, (int(v or 0) for v in r[1:]), strict=True)) for r in rows}


def _pushed(db: Any) -> int:
    """How many outcomes pushed their ``done`` event (an outcome that pushes has its row's
    ``watched`` set): what ``model --notify-share`` stands for."""
    return int(
        db.execute("SELECT count(*) FROM perdure.perdure_workflows WHERE watched = 1").fetchone()[0]
    )


def _per_table(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], count: int
) -> dict[str, dict[str, float]]:
    return {
        table: {
            key: round((value - before.get(table, {}).get(key, 0)) / count, 2)
            for key, value in counts.items()
        }
        for table, counts in after.items()
    }


def _run(workloads: Any, mode: str, n: int, prefix: str) -> float:
    app, checkout = workloads.app, workloads.checkout
    started = time.perf_counter()
    if mode == "sequential":
        for i in range(n):
            app.start(checkout, f"{prefix}{i}").result(timeout=60)
    else:

        async def all_at_once() -> None:
            handles = await asyncio.gather(
                *(app.start_async(checkout, f"{prefix}{i}") for i in range(n))
            )
            await asyncio.gather(*(h.result_async(timeout=300) for h in handles))

        asyncio.run(all_at_once())
    return time.perf_counter() - started


def measure(url: str, n: int) -> dict[str, Any]:
    """Per-workflow costs of ``n`` checkouts started at once (the group-committed case)
    and of ``n // 4`` started one after another (no commit is shared)."""
    admin = _connect(url)
    admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {DATABASE}")
    dboid = admin.execute("SELECT oid FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()[
        0
    ]
    db_url = _with_database(url, DATABASE)
    db = _connect(db_url)
    db.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    workloads = build(db_url)
    results: dict[str, Any] = {"n": n, "server": admin.execute("SHOW server_version").fetchone()[0]}
    try:
        with workloads.app:
            _run(workloads, "sequential", 20, "warm")  # pools, statements, caches
            time.sleep(_STATS_DELAY)
            for mode, count in (("concurrent", n), ("sequential", max(n // 4, 50))):
                db.execute("SELECT pg_stat_clear_snapshot()")
                before, start_lsn = _counters(admin, dboid), _lsn(db)
                tables_before = _tables(db)
                pushed_before = _pushed(db)
                cpu_before = _backend_cpu(admin, DATABASE)
                worker_before = time.process_time()
                wall = _run(workloads, mode, count, f"{mode}-")
                worker_cpu = time.process_time() - worker_before
                cpu = _backend_cpu(admin, DATABASE) - cpu_before
                # A backend reports its statistics at the end of a transaction at most once
                # a second, and an idle one after 10 s: wait for both.
                time.sleep(_STATS_DELAY)
                db.execute("SELECT pg_stat_clear_snapshot()")
                after, end_lsn = _counters(admin, dboid), _lsn(db)
                wal = _wal(db, start_lsn, end_lsn, dboid)
                tables_after = _tables(db)
                per = {key: (after[key] - before[key]) / count for key in before}
                pushed = _pushed(db) - pushed_before
                results[mode] = {
                    "workflows": count,
                    "workflows_per_s": count / wall,
                    "per_workflow": {
                        **per,
                        "wal_records": wal["records"] / count,
                        "wal_bytes": wal["bytes"] / count,
                        "wal_fpi_bytes": wal["fpi_bytes"] / count,
                        "server_cpu_us": cpu / count * 1e6,
                        "worker_cpu_us": worker_cpu / count * 1e6,
                        "outcomes_pushed": pushed / count,
                    },
                    "rows_per_workflow_by_table": _per_table(tables_before, tables_after, count),
                }
    finally:
        workloads.app.shutdown()
        db.close()
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.close()
    results["machine_cores"] = os.cpu_count()
    return results


def _lsn(db: Any) -> str:
    return str(db.execute("SELECT pg_current_wal_lsn()").fetchone()[0])


# -- the load model ---------------------------------------------------------------------


def model(measured: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Workflows per second that one server sustains at each core count, and what runs
    out first. A bound per resource, each from a measured per-workflow cost:

    - server CPU: ``cores * usable / server_cpu_per_workflow``;
    - WAL bandwidth: ``disk MB/s / WAL bytes per workflow``;
    - commits: ``flushes per second * workflows per flush``, where one WAL flush (an
      fsync of ``fsync_ms``) carries every commit that waited for it (group commit):
      ``commits per workflow`` tells how many commit records a workflow needs, and
      ``concurrency`` how many of them can wait for the same flush;
    - pushed events: a transaction that runs ``pg_notify`` holds a lock of the whole
      server from before its commit until after its flush, so such commits share no
      flush: at most ``1000 / fsync_ms`` of them per second, whoever sends them.
      ``notify_share`` of a workflow's commits push an event (an outcome's ``done``, a
      start's ``ready``; 1.0: every commit of a busy worker holds an outcome).
    """
    per = measured[args.case]["per_workflow"]
    rows = []
    for cores in args.cores:
        cpu_bound = cores * args.usable / (per["server_cpu_us"] / 1e6)
        wal_bytes = per["wal_bytes"] + per["wal_fpi_bytes"]
        wal_bound = args.disk_mbps * 1e6 / wal_bytes
        flushes = 1000.0 / args.fsync_ms
        commits_per_flush = min(args.concurrency, args.max_group)
        commit_bound = flushes * commits_per_flush / max(per["commits"], 1e-9)
        notify_bound = flushes / max(per["commits"] * args.notify_share, 1e-9)
        bounds = {
            "server CPU": cpu_bound,
            "WAL bandwidth": wal_bound,
            "commit flushes": commit_bound,
            "pushed events": notify_bound,
        }
        limit = min(bounds, key=lambda key: bounds[key])
        workers = bounds[limit] * per["worker_cpu_us"] / 1e6 / args.worker_usable
        rows.append(
            {
                "cores": cores,
                **{key: round(value) for key, value in bounds.items()},
                "sustained": round(bounds[limit]),
                "saturates": limit,
                "worker_cores_needed": round(workers, 1),
            }
        )
    return rows


def _print_model(rows: list[dict[str, Any]]) -> None:
    header = [
        "server cores",
        "CPU bound",
        "WAL bound",
        "commit bound",
        "pushed-event bound",
        "sustained wf/s",
        "saturates first",
        "worker cores needed",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * 6 + "---|---:|")
    for r in rows:
        print(
            f"| {r['cores']} | {r['server CPU']:,} | {r['WAL bandwidth']:,} | "
            f"{r['commit flushes']:,} | {r['pushed events']:,} | {r['sustained']:,} | "
            f"{r['saturates']} | "
            f"{r['worker_cores_needed']} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure per-workflow costs on a PostgreSQL server")
    m.add_argument(
        "--postgres-url", default=os.environ.get("PERDURE_BENCH_POSTGRES_URL", DEFAULT_URL)
    )
    m.add_argument("-n", type=int, default=2000, help="checkouts started at once")
    m.add_argument("--output", type=Path, default=RESULTS)
    l = sub.add_parser("model", help="how many workflows/s one server sustains")  # noqa: E741
    l.add_argument("--input", type=Path, default=RESULTS)
    l.add_argument("--case", choices=("concurrent", "sequential"), default="concurrent")
    l.add_argument("--cores", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    l.add_argument("--usable", type=float, default=0.7, help="share of server CPU to plan for")
    l.add_argument("--disk-mbps", type=float, default=200.0, help="sustained WAL write MB/s")
    l.add_argument("--fsync-ms", type=float, default=1.0, help="one WAL flush, ms")
    l.add_argument("--concurrency", type=int, default=200, help="commits in flight at once")
    l.add_argument("--max-group", type=int, default=500, help="most commits one flush carries")
    l.add_argument(
        "--notify-share", type=float, default=1.0, help="share of commits that push an event"
    )
    l.add_argument("--worker-usable", type=float, default=0.8, help="share of a worker core")
    args = parser.parse_args(argv)
    if args.command == "measure":
        results = measure(args.postgres_url, args.n)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
        return 0
    measured = json.loads(args.input.read_text())
    _print_model(model(measured, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
