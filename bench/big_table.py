"""The checkout's in-process throughput on a big database, two revisions side by side.

    .venv/bin/python bench/big_table.py main . --store sqlite          # .: src/ as it is
    .venv/bin/python bench/big_table.py HEAD~1 HEAD --store postgresql --kind loop
    .venv/bin/python bench/big_table.py main . --store sqlite --rows 20000 --count 200 --rounds 1

A long-lived installation's database holds many finished workflows. One is prefilled once:
the schema by the OLD revision's own migration, then ``--rows`` finished workflows with 4
step rows each, random UUIDv4 IDs, created over the past 30 days. Each round then times
``--count`` checkouts per kind of both revisions, each run in a process of its own on the
revision's exported src/ (bench/compare.py), old first in odd rounds, new in even ones.
``loop``: ``app.start`` in a loop, then each ``result``; ``gather``: ``asyncio.gather`` of
``start_async``, then of ``result_async``. SQLite: each run on a fresh copy of the file.
PostgreSQL: the runs share one schema, each adds its checkouts; also the WAL per checkout
(``pg_current_wal_lsn()`` around each run, full-page images included). Cleans up on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # not bench/ itself: its modules would shadow top-level ones
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import log  # noqa: E402
from bench.compare import WORKTREE, Revision, _env, check_import, export  # noqa: E402
from bench.settings import DEFAULT_POSTGRES_URL  # noqa: E402
from bench.store_postgres import PostgresWorkspace  # noqa: E402
from bench.store_sqlite import SQLiteWorkspace  # noqa: E402

KINDS = ("loop", "gather")
TABLES = ("perdure_workflows", "perdure_steps")
BATCH = 100_000  # prefilled workflows per SQLite transaction
SPAN = 30 * 86400.0  # the prefilled workflows were created over the past 30 days
SIDES = ("old", "new")
SHARED = (
    "The runs share one schema: each adds its checkouts and a warm-up to it. WAL B: a run's "
    "WAL / its checkouts (its warm-up and the App's start and stop included)."
)


def child(mode: str, url: str, count: int) -> None:
    """In a subprocess, on one revision's src/: ``warm`` (the schema by the App's own
    migration, and one checkout) or a run of ``count`` checkouts of kind ``mode``."""
    from bench.machine import machine
    from bench.workloads import build

    w = build(url)
    with w.app as app:
        app.run(w.checkout, "warm")
        cpu0, t0 = time.process_time(), time.perf_counter()
        if mode == "loop":
            hs = [app.start(w.checkout, f"o-{i}") for i in range(count)]
            for h in hs:
                h.result(timeout=300)
        elif mode == "gather":
            asyncio.run(_gather(app, w.checkout, count))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out = {"per_s": count / wall, "cpu_ms": 1000 * cpu / count, "wall_s": wall} if count else {}
    print(json.dumps({**out, "machine": machine()}))


async def _gather(app: Any, workflow: Any, count: int) -> None:
    hs = await asyncio.gather(*(app.start_async(workflow, f"o-{i}") for i in range(count)))
    await asyncio.gather(*(h.result_async(timeout=300) for h in hs))


def spawn(revision: Revision, mode: str, url: str, count: int = 0) -> dict[str, Any]:
    """``child`` in a process of its own on ``revision``'s copy: its JSON line."""
    command = [sys.executable, str(Path(__file__).resolve()), "_child", mode, url, str(count)]
    done = subprocess.run(command, cwd=ROOT, env=_env(revision), capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise SystemExit(f"big_table: {revision.side} {mode}: exit {done.returncode}\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    measured = Path(result["machine"]["perdure_path"]).resolve()
    if not measured.is_relative_to(revision.src.resolve()):
        raise SystemExit(f"big_table: the {revision.side} run imported {measured}, not the copy")
    return result


def _new(w: Any, at: Any, end: Any) -> dict[str, Any]:
    """A prefilled workflow's own values (the rest: the warm-up's), in either table."""
    times = dict.fromkeys(("created_at", "updated_at", "started_at"), at)
    return dict(id=w, root_id=w, workflow_id=w, finished_at=end, **times)


def sqlite_prefill(path: Path, rows: int) -> list[Any]:
    """``rows`` finished workflows like the warm-up's (with its step rows), random UUIDv4
    IDs, in transactions of BATCH workflows; (table, table or index, bytes) of each."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        templates, inserts = [], []  # the warm-up's workflow, and its steps
        for t in TABLES:
            cur = conn.execute(f"SELECT * FROM {t}")
            cs = [d[0] for d in cur.description]
            templates.append([dict(zip(cs, r, strict=True)) for r in cur])
            inserts.append(f"INSERT INTO {t} ({', '.join(cs)}) VALUES ({', '.join('?' * len(cs))})")
        log(f"  per workflow: {len(templates[0])} row, {len(templates[1])} step rows")
        t0 = time.time() - SPAN
        for start in range(0, rows, BATCH):
            ats = (t0 + i * SPAN / rows for i in range(start, min(rows, start + BATCH)))
            news = [_new(str(uuid.uuid4()), at, at + 0.01) for at in ats]
            conn.execute("BEGIN")
            for insert, template in zip(inserts, templates, strict=True):
                values = ([v.get(k, x) for k, x in row.items()] for v in news for row in template)
                conn.executemany(insert, values)
            conn.execute("COMMIT")
            log(f"  {start + len(news):,} workflows")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return conn.execute(
            "SELECT m.tbl_name, s.name, sum(s.pgsize) FROM dbstat s JOIN sqlite_master m "
            "ON m.name = s.name WHERE m.tbl_name IN (?, ?) GROUP BY s.name",
            TABLES,
        ).fetchall()
    finally:
        conn.close()


def pg_prefill(ws: PostgresWorkspace, schema: str, rows: int) -> list[Any]:
    """The same in PostgreSQL by INSERT ... SELECT from generate_series, then VACUUM
    ANALYZE and CHECKPOINT; (table, table or index, bytes) of each."""
    c = ws.admin
    c.execute(f"SET search_path TO {schema}")
    c.execute(
        "CREATE TEMP TABLE ids AS SELECT gen_random_uuid()::text AS id, (SELECT created_at "
        f"FROM perdure_workflows LIMIT 1) - {SPAN} + (g - 1) * {SPAN / rows} AS at "
        f"FROM generate_series(1, {int(rows)}) g"
    )
    new = _new("ids.id", "ids.at", "ids.at + 0.01")
    q = (  # not perdure_steps.seq: GENERATED ALWAYS AS IDENTITY
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = %s AND is_identity = 'NO' ORDER BY ordinal_position"
    )
    for t in TABLES:  # each row of the table (the warm-up's) once per ID
        cols = [r[0] for r in c.execute(q, (schema, t))]
        values = ", ".join(new.get(k, f"x.{k}") for k in cols)
        c.execute(f"INSERT INTO {t} ({', '.join(cols)}) SELECT {values} FROM ids, {t} x")
        log(f"  {t}")
    c.execute("DROP TABLE ids")
    c.execute(f"VACUUM ANALYZE {', '.join(TABLES)}")
    c.execute("CHECKPOINT")
    q = (
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c LEFT JOIN pg_index x "
        "ON x.indexrelid = c.oid WHERE c.oid = %s::regclass OR x.indrelid = %s::regclass"
    )
    return [(t, *r) for t in TABLES for r in c.execute(q, (f"{schema}.{t}",) * 2)]


def measure(ws: Any, revision: Revision, kind: str, count: int, base: Any, schema: str) -> Any:
    """One run; SQLite: on a fresh copy of the prefilled file; PostgreSQL: with its WAL."""
    if isinstance(ws, SQLiteWorkspace):
        db = ws.new("run")
        shutil.copyfile(base.path, db.path)
        try:
            for suffix in ("-wal", "-shm"):
                Path(f"{db.path}{suffix}").unlink(missing_ok=True)
            return spawn(revision, kind, db.url, count)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db.path}{suffix}").unlink(missing_ok=True)
    lsn = "SELECT pg_current_wal_lsn()"
    lsn0 = str(ws.admin.execute(lsn).fetchone()[0])
    got = spawn(revision, kind, ws.perdure_url(schema), count)
    wal = ws.admin.execute(f"SELECT pg_wal_lsn_diff(({lsn}), %s::pg_lsn)", (lsn0,)).fetchone()
    return {**got, "wal_b": float(wal[0]) / count}


def _row(first: str, second: str, cells: Iterable[str]) -> str:
    return f"| {first} | {second} | {' | '.join(cells)} |"


def table(runs: dict[str, list[dict[str, Any]]], pg: bool) -> tuple[list[str], dict[str, Any]]:
    """The markdown table of one kind; its medians and new/old of the medians."""
    cols = [("per_s", "/s", ",.0f"), ("cpu_ms", "CPU ms", ".3f"), ("wal_b", "WAL B", ",.0f")]
    cols = cols[: 3 if pg else 2]
    med = {s: {k: statistics.median(r[k] for r in runs[s]) for k, _, _ in cols} for s in SIDES}
    ratio = {k: med["new"][k] / med["old"][k] for k, _, _ in cols}
    lines = [_row("round", "first", (f"{s} {label}" for _, label, _ in cols for s in SIDES))]
    lines.append("|---|---|" + "---:|" * (2 * len(cols)))
    for i, pair in enumerate(zip(runs["old"], runs["new"], strict=True)):
        cells = (format(r[k], f) for k, _, f in cols for r in pair)
        lines.append(_row(str(i + 1), pair[0]["first"], cells))
    lines.append(_row("median", "", (format(med[s][k], f) for k, _, f in cols for s in SIDES)))
    lines.append(_row("new/old", "", (c for k, _, _ in cols for c in ("", f"{ratio[k]:.3f}"))))
    return lines, {"median": med, "new_over_old": ratio, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        child(argv[1], argv[2], int(argv[3]))
        return 0
    p = argparse.ArgumentParser(prog="bench/big_table.py", description=__doc__.split("\n")[0])
    p.add_argument("old", help=f"the revision before (git rev; {WORKTREE!r}: this src/ as is)")
    p.add_argument("new", help=f"the revision after (git rev; {WORKTREE!r}: this src/ as is)")
    p.add_argument("--store", required=True, choices=("sqlite", "postgresql"))
    p.add_argument("--kind", action="append", choices=KINDS, help="repeatable; default both")
    p.add_argument("--rows", type=int, default=1_000_000, help="prefilled workflows")
    p.add_argument("--count", type=int, default=3000, help="checkouts per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    p.add_argument("--output", default=None, help="write everything to this JSON file")
    args = p.parse_args(argv)
    if min(args.rows, args.count, args.rounds) < 1:
        p.error("--rows, --count and --rounds must be >= 1")
    kinds, pg = list(dict.fromkeys(args.kind or KINDS)), args.store == "postgresql"
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: clean up

    work = Path(tempfile.mkdtemp(prefix="perdure-big-table-"))
    schema = f"big_table_{uuid.uuid4().hex[:12]}"
    ws: Any = None
    try:
        old, new = export("old", args.old, work), export("new", args.new, work)
        for r in (old, new):
            log(f"{r.side}: {r.rev} = {r.commit}: {check_import(r)}")
        if pg:
            ws = PostgresWorkspace(args.postgres_url, keep=False)
        else:
            ws = SQLiteWorkspace(str(work), "full", keep=False)
        base: Any = None if pg else ws.new("prefilled")
        url = ws.perdure_url(schema) if pg else base.url
        title, store = ws.title(), ws.describe()
        log(f"prefill: {args.rows:,} workflows; {title}")
        t0 = time.perf_counter()
        machine = spawn(old, "warm", url)["machine"]
        sizes = pg_prefill(ws, schema, args.rows) if pg else sqlite_prefill(base.path, args.rows)
        prefill_s = time.perf_counter() - t0
        about = [f"prefill: {prefill_s:.1f} s"]
        for t in TABLES:
            heap = sum(n for tbl, name, n in sizes if tbl == t and name == t) / 1e6
            ix = [n / 1e6 for tbl, name, n in sizes if tbl == t and name != t]
            about.append(f"{t}: {heap:,.1f} MB, {len(ix)} indexes {sum(ix):,.1f} MB")
        log("\n".join(about))
        runs: dict[str, Any] = {k: {s: [] for s in SIDES} for k in kinds}
        for round_ in range(1, args.rounds + 1):
            order = (old, new) if round_ % 2 else (new, old)  # who goes first alternates
            for kind in kinds:
                for r in order:
                    got = measure(ws, r, kind, args.count, base, schema)
                    del got["machine"]  # the warm-up's stands for all
                    got.update(round=round_, first=order[0].side)
                    runs[kind][r.side].append(got)
                    figures = (f"{k} {v:,.3f}" for k, v in got.items() if isinstance(v, float))
                    log(f"round {round_} {kind} {r.side}: {', '.join(figures)}")
    finally:
        if ws is not None:
            if pg:
                ws.drop(schema)
            ws.close()
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n## The checkout on {args.rows:,} finished workflows: {old.rev} ({old.commit}) -> "
        f"{new.rev} ({new.commit}), {args.count:,} per run, {args.rounds} round(s)\n\n{title}"
    )
    print("\n".join(about))
    print("\n" + (SHARED if pg else "Each run on a fresh copy of the prefilled file."))
    summary: dict[str, Any] = {}
    for kind in kinds:
        lines, summary[kind] = table(runs[kind], pg)
        print(f"\n### {kind} (checkouts/s, process CPU per checkout)\n\n" + "\n".join(lines))
    if args.output:
        report = {
            "command": " ".join(["bench/big_table.py", *argv]),
            "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "args": vars(args),
            "revisions": {r.side: {"rev": r.rev, "commit": r.commit} for r in (old, new)},
            "store": store,
            "machine": machine,
            "prefill_s": prefill_s,
            "sizes": sizes,
            "kinds": summary,
        }
        Path(args.output).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nresults written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
