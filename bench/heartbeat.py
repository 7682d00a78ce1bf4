"""What an executor's heartbeat costs the server while it runs N workflows.

``python bench/heartbeat.py --running 10000`` makes a schema of its own on the
PostgreSQL server, records N running workflows owned by one executor (through the
store's API: the same as an executor that claimed them), then sends that executor's
heartbeat K times and reports, per heartbeat: its wall time, the rows it updated in
``perdure_workflows`` (``pg_stat_user_tables``) and the WAL the server wrote meanwhile
(``pg_current_wal_lsn``: server-wide, so run it on an otherwise idle server). Run it
with ``PYTHONPATH`` at an older revision's ``src`` to compare (the store API it uses,
``create_workflow`` and ``heartbeat``, is the same). See docs/scaling.md, "Cheaper
leases".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.append(str(ROOT / "src"))

import psycopg  # noqa: E402

from perdure.storage import ExecutorRecord, NewWorkflow, open_store  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: Rows created per transaction while filling the table.
_FILL_BATCH = 500


def _new(workflow_id: str, now: float) -> NewWorkflow:
    return NewWorkflow(
        id=workflow_id,
        name="checkout",
        inputs="[]",
        serializer="json",
        app_version="1",
        created_at=now,
    )


def measure(url: str, running: int, beats: int) -> dict[str, Any]:
    schema = f"bench_heartbeat_{uuid.uuid4().hex[:8]}"
    store_url = f"{url}{'&' if '?' in url else '?'}schema={schema}"
    admin = psycopg.connect(url, autocommit=True)
    store = open_store(store_url)
    try:
        store.migrate()
        now = time.time()
        store.register_executor(ExecutorRecord("bench", "host", 1, "1", now, now, now + 15.0, None))
        for first in range(0, running, _FILL_BATCH):
            futures = [
                store.create_workflow(_new(f"wf-{n:07d}", now), "bench", now + 15.0)
                for n in range(first, min(first + _FILL_BATCH, running))
            ]
            for future in futures:
                future.result()
        admin.execute(f"VACUUM ANALYZE {schema}.perdure_workflows")

        def updated() -> int:
            admin.execute("SELECT pg_stat_clear_snapshot()")
            row = admin.execute(
                "SELECT n_tup_upd FROM pg_stat_user_tables "
                "WHERE schemaname = %s AND relname = 'perdure_workflows'",
                (schema,),
            ).fetchone()
            return int(row[0]) if row else 0

        times, wal = [], []
        rows_before = updated()
        for beat in range(beats):
            lsn = admin.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            began = time.perf_counter()
            owned = store.heartbeat("bench", time.time(), time.time() + 15.0)
            times.append(time.perf_counter() - began)
            wal.append(
                admin.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,)
                ).fetchone()[0]  # type: ignore[index]
            )
            assert len(owned) == running, (beat, len(owned))
        # A backend reports its statistics when it ends (PostgreSQL 15: or at most once
        # a second while busy): close the store's connections, then read them.
        store.close()
        time.sleep(1.5)
        rows = (updated() - rows_before) / beats
    finally:
        store.close()
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()
    return {
        "running": running,
        "heartbeats": beats,
        "ms_per_heartbeat_median": 1000 * statistics.median(times),
        "rows_updated_per_heartbeat": rows,
        "wal_bytes_per_heartbeat_median": float(statistics.median(wal)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", default=DEFAULT_URL)
    parser.add_argument("--running", type=int, default=10_000)
    parser.add_argument("--beats", type=int, default=10)
    parser.add_argument("--output", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = measure(args.postgres_url, args.running, args.beats)
    print(json.dumps(result, indent=2))
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
