"""Measurements behind the analysis in docs/performance.md (not part of the benchmark).

    .venv/bin/python bench/explain.py threads postgresql async  # CPU per thread, 2,000 checkouts
    .venv/bin/python bench/explain.py threads sqlite loop       # kinds: async, gather, loop
    .venv/bin/python bench/explain.py sequential postgresql     # commits, reads per checkout
    .venv/bin/python bench/explain.py timeline sqlite           # a checkout's time between commits
    .venv/bin/python bench/explain.py lone-write                # 1 write per transaction, 4 ways
    .venv/bin/python bench/explain.py batch-write               # 1,000 writes in 1 transaction
    .venv/bin/python bench/explain.py batch-write -n 40 --busy 8  # 40, with 8 threads busy
    .venv/bin/python bench/explain.py notify-commits            # sessions committing at once
    .venv/bin/python bench/explain.py start-latency postgresql  # what an app.start loop waits for
    .venv/bin/python bench/explain.py wakeups                   # thread wake-ups: one core or two

``threads`` runs one in-process throughput figure and reads every thread's CPU time from
/proc/self/task/*/schedstat (in ns, unlike a sampling profiler or ``stat``'s 10 ms
ticks). ``sequential`` times perdure's transactions (``GroupCommitter._commit``) and
reads (``get_workflow``) inside sequential checkouts; ``timeline`` stamps the time
between them (``bench/timeline.py``). ``lone-write`` and ``batch-write``
run perdure's step INSERT with psycopg directly, the way perdure's writer sends it and
the alternatives (``lone-write`` also without its row lock and foreign key, and the
floor's INSERT alone). ``notify-commits`` counts the commits/s of 1-8 sessions that each
commit one ``INSERT`` after another, with and without a ``pg_notify`` in the statement
(PostgreSQL serializes the commits of transactions that notify: see docs/scaling.md).
``start-latency`` times a plain ``app.start`` loop alone and beside workflows that run
in the same process (``bench/start_latency.py``: the interpreter lock or the cores), and
splits each start's commit by the transaction that carried it (led by the loop's thread,
or queued for the writer's: the waits before and after it).
``wakeups`` times hand-offs between threads on one core and across cores
(``bench/wakeups.py``).
They use the same ``--postgres-url`` default as bench/run.py, in a schema of their own,
dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.settings import DEFAULT_POSTGRES_URL, STORES  # noqa: E402
from bench.start_latency import start_latency  # noqa: E402
from bench.timeline import report as timeline_report  # noqa: E402
from bench.wakeups import wakeups  # noqa: E402
from bench.workloads import build  # noqa: E402
from bench.workspace import PostgresWorkspace, SQLiteWorkspace, Workspace  # noqa: E402


def workspace(store: str, url: str) -> Workspace:
    if store == "postgresql":
        return PostgresWorkspace(url, keep=False)
    return SQLiteWorkspace(None, "full", keep=False)


def thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process, from its ``schedstat`` (nanoseconds
    on the CPU): ``stat``'s clock ticks (10 ms) round the many short-lived bits of a
    pool of workflow threads down to nothing."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as stat:
                out[int(tid)] = int(stat.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return out


def threads(store: str, kind: str, n: int, url: str) -> None:
    ws = workspace(store, url)
    db = ws.new("threads")
    w = build(db.url)
    app = w.app
    fn = w.checkout_async if kind == "async" else w.checkout
    snap: dict[str, Any] = {}

    def end() -> None:  # before asyncio.run() retires its to_thread workers
        snap["cpu"] = thread_cpu()
        snap["names"] = {t.native_id: t.name for t in threading.enumerate()}

    try:
        with app:
            app.run(fn, "warm-up")
            before = thread_cpu()
            process0 = time.process_time()
            t0 = time.perf_counter()
            if kind == "loop":
                handles = [app.start(fn, f"order-{i}") for i in range(n)]
                for handle in handles:
                    handle.result(timeout=120)
                end()
            else:

                async def main() -> None:
                    hs = await asyncio.gather(*(app.start_async(fn, f"o-{i}") for i in range(n)))
                    await asyncio.gather(*(h.result_async(timeout=120) for h in hs))
                    end()

                asyncio.run(main())
            wall = time.perf_counter() - t0
            process = time.process_time() - process0
    finally:
        db.close()
        ws.close()
    per: collections.Counter[str] = collections.Counter()
    for tid, cpu in snap["cpu"].items():
        name = snap["names"].get(tid, "(thread gone)")
        name = re.sub(r":.*", "", re.sub(r"\d+", "N", name))
        per[name] += cpu - before.get(tid, 0.0)
    print(
        f"{store}, {kind}: {n / wall:.0f} checkouts/s, process CPU {1000 * process / n:.2f} ms "
        f"per checkout ({process / wall:.2f} cores)"
    )
    for name, cpu in per.most_common():
        if cpu > 0:
            print(f"  {name:28s} {1000 * cpu / n:6.3f} ms per checkout ({cpu / wall:.2f} cores)")
    # Threads that ended before the last reading (a burst's shared-reads thread) are not
    # in /proc/self/task any more: their CPU is the rest of the process's.
    gone = process - sum(per.values())
    if gone > 0:
        print(f"  {'(threads that ended)':28s} {1000 * gone / n:6.3f} ms per checkout")


def sequential(store: str, n: int, url: str) -> None:
    from perdure.storage._batch import GroupCommitter

    times: dict[str, list[float]] = collections.defaultdict(list)

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            try:
                return fn(*args)
            finally:
                times[f"{label} wall"].append((time.perf_counter_ns() - t0) / 1000)
                times[f"{label} cpu"].append((time.thread_time_ns() - c0) / 1000)

        return wrapper

    GroupCommitter._commit = timed("transaction", GroupCommitter._commit)  # type: ignore[method-assign]
    ws = workspace(store, url)
    db = ws.new("sequential")
    w = build(db.url)
    totals = []
    try:
        with w.app:
            cls = type(w.app.store)
            cls.get_workflow = timed("read", cls.get_workflow)  # type: ignore[method-assign]
            for i in range(30):
                w.app.run(w.checkout, f"warm-{i}")
            times.clear()
            cpu0 = time.process_time()
            for i in range(n):
                t0 = time.perf_counter_ns()
                w.app.run(w.checkout, f"order-{i}")
                totals.append((time.perf_counter_ns() - t0) / 1000)
            cpu = time.process_time() - cpu0
    finally:
        db.close()
        ws.close()
    print(
        f"{store}: sequential checkout p50 {statistics.median(totals):.0f} µs, "
        f"process CPU {1e6 * cpu / n:.0f} µs per checkout"
    )
    for label, values in times.items():
        median = statistics.median(values)
        print(
            f"  {label:18s} {len(values) / n:4.1f} per checkout, median {median:5.0f} µs, "
            f"{sum(values) / n:6.0f} µs per checkout"
        )


_STEP_INSERT = (
    "INSERT INTO s (workflow_id, position, name, status, output, error, attempts, "
    "next_attempt_at, updated_at) SELECT %s::text, %s::text, %s::text, %s::text, %s::text, "
    "%s::text, %s::integer, %s::double precision, %s::double precision "
    "WHERE EXISTS (SELECT 1 FROM w WHERE id = %s AND owner = %s AND epoch = %s "
    "AND status = 'RUNNING' FOR KEY SHARE) ON CONFLICT (workflow_id, position) DO NOTHING"
)


# The same without the fence's row lock, into the step table without a foreign key: what
# the record costs the server beyond a plain INSERT of as many columns.
_BARE_INSERT = _STEP_INSERT.replace("INTO s ", "INTO s_bare ").replace(" FOR KEY SHARE", "")


# The same records as one statement over a JSON array of their parameters (perdure's
# INSERT_STEPS_JSON since bbb1ec2, on these tables).
_STEPS_JSON = (
    "INSERT INTO s (workflow_id, position, name, status, output, error, attempts, "
    "next_attempt_at, updated_at) SELECT e->>0, e->>1, e->>2, e->>3, e->>4, e->>5, "
    "(e->>6)::integer, (e->>7)::double precision, (e->>8)::double precision "
    "FROM jsonb_array_elements(%s::jsonb) AS e "
    "WHERE EXISTS (SELECT 1 FROM w WHERE id = e->>9 AND owner = e->>10 "
    "AND epoch = (e->>11)::bigint AND status = 'RUNNING' FOR KEY SHARE) "
    "ON CONFLICT (workflow_id, position) DO NOTHING RETURNING workflow_id"
)


def _pg_tables(url: str, workflows: int) -> tuple[Any, Any, str, list[str]]:
    import uuid

    import psycopg

    ws = PostgresWorkspace(url, keep=False)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    conn = psycopg.connect(ws.conninfo, autocommit=True)
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"SET search_path TO {schema}")
    conn.execute("CREATE TABLE w (id TEXT PRIMARY KEY, owner TEXT, epoch BIGINT, status TEXT)")
    conn.execute(
        "CREATE TABLE s (workflow_id TEXT REFERENCES w (id), position TEXT, name TEXT, "
        "status TEXT, output TEXT, error TEXT, attempts INTEGER, next_attempt_at DOUBLE "
        "PRECISION, updated_at DOUBLE PRECISION, PRIMARY KEY (workflow_id, position))"
    )
    conn.execute(
        "CREATE TABLE f (id BIGSERIAL PRIMARY KEY, workflow_id TEXT, position TEXT, o TEXT)"
    )
    # The step table without its foreign key, for lone-write's cheapest record.
    conn.execute("CREATE TABLE s_bare (LIKE s INCLUDING INDEXES)")
    ids = [uuid.uuid4().hex for _ in range(workflows)]
    with conn.transaction():
        for wid in ids:
            conn.execute("INSERT INTO w VALUES (%s, 'me', 1, 'RUNNING')", (wid,))
    return ws, conn, schema, ids


def _params(wid: str, position: int) -> tuple[Any, ...]:
    output = '{"order":"order-1","step":"authorize_payment"}'
    return (wid, str(position), "authorize_payment", "SUCCEEDED", output, None, 1, None,
            time.time(), wid, "me", 1)  # fmt: skip


def lone_write(url: str, rounds: int) -> None:
    import psycopg

    ws, conn, schema, (wid,) = _pg_tables(url, 1)
    plain = psycopg.connect(ws.conninfo, autocommit=False)
    plain.execute(f"SET search_path TO {schema}")
    plain.commit()
    position = iter(range(10**9))

    def pipelined() -> None:  # perdure's writer for a batch of one multi-statement write
        with conn.pipeline():  # leaving it sends the one Sync
            conn.execute("BEGIN")
            cursor = conn.execute(_STEP_INSERT, _params(wid, next(position)))
            conn.execute("COMMIT")
        assert cursor.rowcount == 1

    def pipelined_twice() -> None:  # the same with a Sync of its own (perdure until 12/2026)
        with conn.pipeline() as pipeline:
            conn.execute("BEGIN")
            cursor = conn.execute(_STEP_INSERT, _params(wid, next(position)))
            conn.execute("COMMIT")
            pipeline.sync()
        assert cursor.rowcount == 1

    def autocommit() -> None:  # perdure's lone step: one round trip, one commit
        assert conn.execute(_STEP_INSERT, _params(wid, next(position))).rowcount == 1

    def begin_commit() -> None:  # autocommit off: BEGIN, INSERT, COMMIT round trips
        cursor = plain.execute(_STEP_INSERT, _params(wid, next(position)))
        plain.commit()
        assert cursor.rowcount == 1

    def floor() -> None:  # the benchmark's floor
        plain.execute("INSERT INTO f (workflow_id, position, o) VALUES ('wf', '1', 'x')")
        plain.commit()

    def plain_alone() -> None:  # the floor's INSERT in one round trip
        conn.execute("INSERT INTO f (workflow_id, position, o) VALUES ('wf', '1', 'x')")

    def bare() -> None:  # the record without its fence's row lock or a foreign key
        assert conn.execute(_BARE_INSERT, _params(wid, next(position))).rowcount == 1

    ways = {
        "floor (plain INSERT; autocommit off)": floor,
        "pipeline BEGIN; step INSERT; COMMIT; sync; exit": pipelined_twice,
        "pipeline BEGIN; step INSERT; COMMIT (1 Sync)": pipelined,
        "step INSERT; autocommit off (3 round trips)": begin_commit,
        "step INSERT alone in autocommit": autocommit,
        "the same, no row lock, no foreign key": bare,
        "plain INSERT alone in autocommit": plain_alone,
    }
    samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in ways}
    try:
        for fn in ways.values():
            for _ in range(20):
                fn()
        for _ in range(rounds):  # interleaved, so that drift hits every way alike
            for label, fn in ways.items():
                c0, t0 = time.thread_time(), time.perf_counter()
                fn()
                samples[label][0].append(1e6 * (time.perf_counter() - t0))
                samples[label][1].append(1e6 * (time.thread_time() - c0))
    finally:
        plain.close()
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()
        ws.close()
    print(f"one write per transaction, {rounds} interleaved rounds (medians):")
    for label, (wall, cpu) in samples.items():
        print(f"  {label:46s} {statistics.median(wall):5.0f} µs wall, "
              f"{statistics.median(cpu):4.0f} µs client CPU")  # fmt: skip


def batch_write(url: str, n: int, busy: int = 0) -> None:
    ws, conn, schema, ids = _pg_tables(url, n)
    round_ = iter(range(10**9))

    def per_statement() -> None:  # what perdure's writer does: conn.execute per write
        p = next(round_)
        with conn.pipeline() as pipeline:
            conn.execute("BEGIN")
            cursors = [conn.execute(_STEP_INSERT, _params(wid, p)) for wid in ids]
            conn.execute("COMMIT")
            pipeline.sync()
        assert all(c.rowcount == 1 for c in cursors)

    def one_cursor() -> None:
        p = next(round_)
        with conn.pipeline() as pipeline:
            conn.execute("BEGIN")
            cursor = conn.cursor()
            for wid in ids:
                cursor.execute(_STEP_INSERT, _params(wid, p))
            conn.execute("COMMIT")
            pipeline.sync()

    def executemany() -> None:  # what perdure's writer did until bbb1ec2
        p = next(round_)
        with conn.pipeline() as pipeline:
            conn.execute("BEGIN")
            conn.cursor().executemany(_STEP_INSERT, [_params(wid, p) for wid in ids])
            conn.execute("COMMIT")
            pipeline.sync()

    def json_array() -> None:  # what it does now
        p = next(round_)
        with conn.pipeline() as pipeline:
            conn.execute("BEGIN")
            payload = json.dumps([_params(wid, p) for wid in ids], ensure_ascii=False)
            cursor = conn.execute(_STEPS_JSON, (payload,))
            conn.execute("COMMIT")
            pipeline.sync()
        assert len(cursor.fetchall()) == n

    # Threads that keep the GIL busy, as a worker's workflow threads do: every time the
    # writer lets go of it (a poll of the socket), it must win it back.
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(200))
            time.sleep(0.0001)

    spinners = [threading.Thread(target=spin, daemon=True) for _ in range(busy)]
    for thread in spinners:
        thread.start()
    try:
        print(
            f"{n} step INSERTs in one pipelined transaction, {busy} other threads busy "
            "(client CPU per write):"
        )
        for _ in range(2):
            for label, fn in (
                ("conn.execute per write", per_statement),
                ("one cursor for the batch", one_cursor),
                ("cursor.executemany", executemany),
                ("one statement, a JSON array", json_array),
            ):
                c0, t0 = time.thread_time(), time.perf_counter()
                fn()
                cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
                print(f"  {label:34s} {1e6 * cpu / n:5.1f} µs CPU, {1e6 * wall / n:5.1f} µs wall")
    finally:
        stop.set()
        for thread in spinners:
            thread.join()
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()
        ws.close()


def notify_commits(url: str, seconds: float) -> None:
    import psycopg

    ws, conn, schema, _ = _pg_tables(url, 0)
    channel = f"{schema}_events"
    listener = psycopg.connect(ws.conninfo, autocommit=True)
    listener.execute(f"LISTEN {channel}")
    stop = threading.Event()

    def listen() -> None:  # as perdure's listener: every process has one
        while not stop.is_set():
            for _ in listener.notifies(timeout=0.1):
                pass

    def session(notify: bool, until: float, counts: list[int]) -> None:
        with psycopg.connect(ws.conninfo, autocommit=True) as own:
            own.execute(f"SET search_path TO {schema}")
            insert = "INSERT INTO f (workflow_id, position, o) VALUES ('wf', '1', 'x')"
            sql = f"WITH i AS ({insert} RETURNING 1) SELECT pg_notify(%s, 'x') FROM i"
            done = 0
            while time.perf_counter() < until:
                own.execute(sql, (channel,)) if notify else own.execute(insert)
                done += 1
            counts.append(done)

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    print(f"commits/s of sessions committing one INSERT each, {seconds:g} s per cell:")
    try:
        for sessions in (1, 2, 4, 8):
            row = []
            for notify in (False, True):
                counts: list[int] = []
                until = time.perf_counter() + seconds
                pool = [
                    threading.Thread(target=session, args=(notify, until, counts))
                    for _ in range(sessions)
                ]
                for thread in pool:
                    thread.start()
                for thread in pool:
                    thread.join()
                row.append(sum(counts) / seconds)
            print(f"  {sessions} session(s): {row[0]:6.0f} without pg_notify, "
                  f"{row[1]:6.0f} with ({row[1] / row[0]:.2f}x)")  # fmt: skip
    finally:
        stop.set()
        reader.join()
        listener.close()
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()
        ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "what",
        choices=(
            "threads",
            "sequential",
            "timeline",
            "lone-write",
            "batch-write",
            "notify-commits",
            "start-latency",
            "wakeups",
        ),
    )
    parser.add_argument("store", nargs="?", choices=STORES, default="postgresql")
    parser.add_argument("kind", nargs="?", choices=("async", "gather", "loop"), default="async")
    parser.add_argument("-n", type=int, default=None)
    parser.add_argument("--busy", type=int, default=0, help="batch-write: threads kept busy")
    parser.add_argument("--cpu", type=float, default=300.0, help="start-latency: µs per workflow")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    url = args.postgres_url
    if args.what == "threads":
        threads(args.store, args.kind, args.n or 2000, url)
    elif args.what == "sequential":
        sequential(args.store, args.n or 300, url)
    elif args.what == "timeline":
        ws = workspace(args.store, url)
        try:
            timeline_report(args.store, ws.new("timeline").url, args.n or 2000)
        finally:
            ws.close()
    elif args.what == "lone-write":
        lone_write(url, args.n or 300)
    elif args.what == "notify-commits":
        notify_commits(url, args.n or 3)
    elif args.what == "wakeups":
        wakeups(args.n or 20000)
    elif args.what == "start-latency":
        ws = workspace(args.store, url)
        try:
            start_latency(ws, args.store, args.n or 2000, args.cpu)
        finally:
            ws.close()
    else:
        batch_write(url, args.n or 1000, args.busy)


if __name__ == "__main__":
    main()
