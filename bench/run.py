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
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import logging
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.probe import COMMITS, summarize  # noqa: E402  (installs the commit counter)
from bench.workloads import build, plain_checkout  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
STORES = ("sqlite", "postgresql")

TARGETS = {
    "sequential_p50_commits": 8.0,  # sequential checkout p50 <= 8 floor commits
    "step_overhead_commits": 1.5,  # per-step overhead <= 1.5 floor commits
    "throughput_per_s": 1000.0,  # >= 1,000 checkouts/s on 2 cores
    "recovery_s": 10.0,  # all interrupted checkouts done within 10 s of the new worker
    "waiting_rss_mb": 200.0,  # 10,000 waiting workflows: worker under 200 MB resident
}

FULL = {
    "floor_commits": 500,
    "floor_bracket": 200,
    "floor_plain": 200_000,
    "seq_warmup": 30,
    "seq_timed": 300,
    "steps": 1000,
    "steps_repeats": 3,
    "throughput": 2000,
    "throughput_repeats": 3,
    "recovery": 2000,
    "recovery_repeats": 3,
    "mp_n": 2000,
    "mp_repeats": 1,
    "waiting": 10_000,
}
QUICK = {
    "floor_commits": 200,
    "floor_bracket": 100,
    "floor_plain": 50_000,
    "seq_warmup": 10,
    "seq_timed": 50,
    "steps": 200,
    "steps_repeats": 1,
    "throughput": 300,
    "throughput_repeats": 1,
    "recovery": 300,
    "recovery_repeats": 1,
    "mp_n": 300,
    "mp_repeats": 1,
    "waiting": 1000,
}

SECTIONS = (
    "sequential",
    "steps",
    "throughput_sync",
    "throughput_sync_gather",
    "throughput_async",
    "recovery",
    "waiting",
    "multiprocess",
)
#: Figures that only one store has.
STORE_SECTIONS = {"multiprocess": ("postgresql",)}
#: A figure during which the PostgreSQL server restarted is measured again, this often.
MAX_RESTARTS = 5
#: Seconds to wait after a restart before measuring again.
RESTART_PAUSE = 3.0


# -- helpers -------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _CountingHandler(logging.Handler):
    """Counts the warnings of perdure and psycopg in the benchmark process (they go to a
    file, not to the terminal): a figure with warnings ran into trouble."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


LOG_COUNT = _CountingHandler()


def capture_logs(path: Path) -> None:
    """Send the warnings of perdure and psycopg to ``path``, and count them."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("perdure", "psycopg"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.addHandler(LOG_COUNT)
        logger.propagate = False


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int | str) -> tuple[int, float, float] | None:
    """(ppid, own CPU s, waited-for children's CPU s) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")": state ppid ... utime(12th) stime cutime cstime.
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime) / _TICK, (cutime + cstime) / _TICK


def process_cpu(pid: int) -> float | None:
    """CPU seconds a process has used (not its children)."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


class ServerCPU:
    """CPU time of a local PostgreSQL server: the postmaster, its waited-for children
    (backends that exited) and its live children (backends, WAL writer, ...). It counts
    every session of the server, not only the benchmark's.

    When the server restarts (a new postmaster), the count starts again from the new
    one: ``generation`` changes, and a difference across it means nothing."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster
        self.generation = 0

    @staticmethod
    def _comm(pid: int | str) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""

    def _relocate(self) -> None:
        """Find the new postmaster: a ``postgres`` process whose parent is not one."""
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and self._comm(entry.name) == "postgres":
                stat = _proc_stat(entry.name)
                if stat is not None and self._comm(stat[0]) != "postgres":
                    self.postmaster = int(entry.name)
                    self.generation += 1
                    return

    def seconds(self) -> float:
        if self._comm(self.postmaster) != "postgres":
            self._relocate()
        total = 0.0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            stat = _proc_stat(entry.name)
            if stat is None:
                continue
            ppid, own, children = stat
            if ppid == self.postmaster or int(entry.name) == self.postmaster:
                total += own + children
        return total


class Load:
    """CPU that *other* processes used on this machine while a block ran, in cores.

    The machine's busy time (/proc/stat) minus this process's and its waited-for
    children's CPU time, and minus the local PostgreSQL server's (``server``) when the
    figure uses it: a number well above 0 means the figure was measured on a busy
    machine and is pessimistic.
    """

    def __init__(self, server: ServerCPU | None = None) -> None:
        self.server = server
        self.wall0 = time.perf_counter()
        self.busy0 = self._busy()
        self.own0 = self._own()
        self.server0 = server.seconds() if server else 0.0
        self.generation = server.generation if server else 0

    @staticmethod
    def _busy() -> float:
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:9]]
        except (OSError, ValueError):
            return float("nan")
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / _TICK

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def server_seconds(self) -> float:
        """The server's CPU seconds since the start (0 without a local server, NaN if it
        restarted meanwhile)."""
        if self.server is None:
            return 0.0
        now = self.server.seconds()
        return now - self.server0 if self.server.generation == self.generation else float("nan")

    def foreign_cores(self) -> float:
        wall = time.perf_counter() - self.wall0
        server = self.server_seconds()
        if server != server:  # NaN: the server restarted, its CPU is unknown
            server = 0.0
        foreign = (self._busy() - self.busy0) - (self._own() - self.own0) - server
        return max(0.0, foreign / wall) if wall > 0 else 0.0


def settle(max_wait: float, threshold: float = 0.15) -> dict[str, Any]:
    """Wait (at most ``max_wait`` s) until other processes use under ``threshold`` cores
    for two half-second samples in a row."""
    start = time.monotonic()
    quiet = 0
    foreign = float("nan")
    while time.monotonic() - start < max_wait:
        load = Load()
        time.sleep(0.5)
        foreign = load.foreign_cores()
        quiet = quiet + 1 if foreign < threshold else 0
        if quiet >= 2:
            break
    return {"waited_s": time.monotonic() - start, "foreign_cores": foreign, "quiet": quiet >= 2}


class CPU:
    """This process's CPU time and the database server's over a block (per unit of work)."""

    def __init__(self, ws: Workspace) -> None:
        self.server = ws.server_cpu
        self.own0 = time.process_time()
        self.server0 = self.server.seconds() if self.server else None
        self.generation = self.server.generation if self.server else 0

    def stop(self, units: int) -> dict[str, float | None]:
        own = time.process_time() - self.own0
        server = None
        if self.server is not None and self.server0 is not None:
            now = self.server.seconds()
            if self.server.generation == self.generation:
                server = (now - self.server0) * 1000 / units
        return {"cpu_ms": own * 1000 / units, "server_cpu_ms": server, "cpu_s": own}


def _floor_summary(
    n: int, samples: list[float], cpu_s: float, warmup: int, server_s: float | None
) -> dict[str, Any]:
    timed = samples[warmup:]
    ordered = sorted(timed)
    return {
        "n": n,
        "median_us": statistics.median(ordered),
        "p90_us": percentile(ordered, 90),
        "min_us": ordered[0],
        "cpu_us": cpu_s * 1e6 / n,
        "server_cpu_us": None if server_s is None else server_s * 1e6 / n,
        "samples_us": timed,
    }


# -- the stores: a fresh database per figure, the floor, and a few counts -------------------


class SQLiteDatabase:
    """One SQLite file."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = path
        # sqlite:/// + /absolute/path = four slashes.
        self.url = f"sqlite:///{path}?synchronous={synchronous}"
        self.label = path.stem

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()

    def count(self, status: str = "SUCCEEDED") -> int:
        rows = self._rows("SELECT count(*) FROM perdure_workflows WHERE status = ?", (status,))
        return int(rows[0][0])

    def executors(self) -> int:
        rows = self._rows("SELECT count(*) FROM perdure_executors WHERE stopped_at IS NULL")
        return int(rows[0][0])

    def summary(self) -> dict[str, int]:
        return _summary(self._rows)

    def close(self) -> None:
        pass  # the workspace's folder goes at the end


def _summary(rows: Callable[[str], list[Any]]) -> dict[str, int]:
    by_status = rows("SELECT status, count(*) FROM perdure_workflows GROUP BY status")
    steps = rows("SELECT count(*) FROM perdure_steps")[0][0]
    recoveries = rows("SELECT coalesce(sum(recoveries), 0) FROM perdure_workflows")[0][0]
    summary = {str(k).lower(): int(v) for k, v in by_status}
    summary["steps"] = int(steps)
    summary["recoveries"] = int(recoveries)
    return summary


class SQLiteWorkspace:
    """A temporary folder; every figure gets a fresh database file in it."""

    store = "sqlite"
    server_cpu: ServerCPU | None = None

    def __init__(self, parent: str | None, synchronous: str, keep: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="perdure-bench-", dir=parent))
        self.synchronous = synchronous
        self.keep = keep
        self._n = 0

    def new(self, label: str) -> SQLiteDatabase:
        self._n += 1
        return SQLiteDatabase(self.dir / f"{self._n:02d}-{label}.db", self.synchronous)

    def floor_commit(self, n: int) -> dict[str, Any]:
        """One BEGIN IMMEDIATE + INSERT + COMMIT per row, WAL, the store's synchronous."""
        path = self.new("floor").path
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        conn.execute(
            "CREATE TABLE rows (id INTEGER PRIMARY KEY, workflow_id TEXT, position TEXT, "
            "output TEXT)"
        )
        payload = json.dumps({"order": 12345, "step": "authorize_payment"})
        samples: list[float] = []
        warmup = 20
        cpu0 = 0.0
        for i in range(n + warmup):
            if i == warmup:
                cpu0 = time.thread_time()
            t0 = time.perf_counter_ns()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO rows (workflow_id, position, output) VALUES (?, ?, ?)",
                (f"wf-{i}", str(i % 4), payload),
            )
            conn.execute("COMMIT")
            samples.append((time.perf_counter_ns() - t0) / 1000)
        cpu = time.thread_time() - cpu0
        conn.close()
        path.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return _floor_summary(n, samples, cpu, warmup, None)

    def epoch(self) -> str | None:
        return None

    def wait_for_server(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {
            "store": "sqlite",
            "synchronous": self.synchronous.upper(),
            "sqlite": sqlite3.sqlite_version,
            "tmp_dir": str(self.dir),
            "filesystem": filesystem(self.dir),
        }

    def title(self) -> str:
        fs = filesystem(self.dir)
        return (
            f"SQLite {sqlite3.sqlite_version} WAL synchronous={self.synchronous.upper()}, "
            f"{fs['type']} on {fs['device']}"
        )

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


#: Options of perdure's PostgreSQL URL that libpq does not know.
_PERDURE_URL_OPTIONS = ("schema", "pool_min", "pool_max")


class PostgresDatabase:
    """One schema ``bench_<hex>`` in the PostgreSQL database; dropped by ``close``."""

    def __init__(self, ws: PostgresWorkspace, label: str) -> None:
        self.ws = ws
        self.label = label
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        self.url = ws.perdure_url(self.schema)
        self._conn: Any = None

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        for attempt in range(3):
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self.ws.connect(autocommit=True)
                    self._conn.execute(f"SET search_path TO {self.schema}")
                return list(self._conn.execute(query.replace("?", "%s"), params).fetchall())
            except self.ws.psycopg.OperationalError:
                if attempt == 2:
                    raise
                self._conn = None
                self.ws.wait_for_server()
        raise AssertionError("unreachable")

    def count(self, status: str = "SUCCEEDED") -> int:
        rows = self._rows("SELECT count(*) FROM perdure_workflows WHERE status = ?", (status,))
        return int(rows[0][0])

    def executors(self) -> int:
        rows = self._rows("SELECT count(*) FROM perdure_executors WHERE stopped_at IS NULL")
        return int(rows[0][0])

    def summary(self) -> dict[str, int]:
        return _summary(self._rows)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.ws.drop(self.schema)


class PostgresWorkspace:
    """A PostgreSQL database; every figure gets a fresh schema in it, and the floor a
    plain table in a schema of its own, all dropped at the end (unless ``keep``)."""

    store = "postgresql"

    def __init__(self, url: str, keep: bool) -> None:
        import psycopg

        self.psycopg = psycopg
        parts = urlsplit(url)
        query = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in _PERDURE_URL_OPTIONS
        ]
        self._parts = parts._replace(query=urlencode(query))
        self.conninfo = urlunsplit(self._parts)
        self.keep = keep
        self._admin: Any = None
        self.settings = self._settings()
        self.server_cpu = self._find_server()
        self.floor_schema = f"bench_{uuid.uuid4().hex[:12]}"
        self.admin.execute(f"CREATE SCHEMA {self.floor_schema}")
        self.admin.execute(
            f"CREATE TABLE {self.floor_schema}.floor_rows (id BIGSERIAL PRIMARY KEY, "
            "workflow_id TEXT, position TEXT, output TEXT)"
        )

    def connect(self, autocommit: bool) -> Any:
        return self.psycopg.connect(self.conninfo, autocommit=autocommit, connect_timeout=10)

    @property
    def admin(self) -> Any:
        """An autocommit connection for DDL and checks, replaced after a server restart."""
        if self._admin is None or self._admin.closed or self._admin.broken:
            self.wait_for_server()
            self._admin = self.connect(autocommit=True)
            self._admin.execute("SET lock_timeout = '10s'")
        return self._admin

    def wait_for_server(self, timeout: float = 120.0) -> None:
        """Return once the server accepts a connection (other sessions on this machine
        may restart it, e.g. crash tests); raise after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect(autocommit=True).close()
                return
            except self.psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def epoch(self) -> str | None:
        """When the server (postmaster) started: changes when it restarts."""
        for attempt in range(3):
            try:
                return str(self.admin.execute("SELECT pg_postmaster_start_time()").fetchone()[0])
            except self.psycopg.OperationalError:
                if attempt == 2:
                    raise
                self._admin = None
        return None

    def perdure_url(self, schema: str) -> str:
        query = parse_qsl(self._parts.query, keep_blank_values=True) + [("schema", schema)]
        return urlunsplit(self._parts._replace(query=urlencode(query)))

    def new(self, label: str) -> PostgresDatabase:
        return PostgresDatabase(self, label)

    def drop(self, schema: str) -> None:
        if self.keep:
            return
        for _attempt in range(3):
            try:
                self.admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                return
            except self.psycopg.OperationalError:
                self._admin = None  # a restart: try again on a new connection
            except self.psycopg.Error as exc:
                log(f"  could not drop schema {schema}: {exc}")
                return
        log(f"  could not drop schema {schema}")

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"version": self.admin.info.server_version}
        for name in (
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "full_page_writes",
            "commit_delay",
            "shared_buffers",
            "max_connections",
            "data_directory",
        ):
            try:
                settings[name] = self.admin.execute(f"SHOW {name}").fetchone()[0]
            except self.psycopg.Error:
                settings[name] = "?"
        data = settings.get("data_directory")
        if data and data != "?" and Path(data).exists():
            settings["data_filesystem"] = filesystem(Path(data))
        return settings

    def _find_server(self) -> ServerCPU | None:
        """The local server's postmaster (the parent of our backend), when it runs on this
        machine and /proc shows it; else None (server CPU is then not reported)."""
        try:
            backend = int(self.admin.execute("SELECT pg_backend_pid()").fetchone()[0])
        except self.psycopg.Error:
            return None
        host = (self._parts.hostname or "").lower()
        if host not in ("", "localhost", "127.0.0.1", "::1") and not host.startswith("/"):
            return None
        stat = _proc_stat(backend)
        if stat is None:
            return None
        try:
            comm = Path(f"/proc/{stat[0]}/comm").read_text().strip()
        except OSError:
            return None
        return ServerCPU(stat[0]) if comm.startswith("postgres") else None

    def floor_commit(self, n: int) -> dict[str, Any]:
        """One INSERT + COMMIT per row into a plain table, psycopg 3 over TCP, autocommit
        off (psycopg sends BEGIN before the INSERT: three round trips, one WAL flush).
        Measured again from the start if the server restarts meanwhile."""
        for attempt in range(5):
            try:
                return self._floor_commit(n)
            except self.psycopg.OperationalError:
                if attempt == 4:
                    raise
                log("  the PostgreSQL server went away during the floor; measuring it again")
                self.wait_for_server()
        raise AssertionError("unreachable")

    def _floor_commit(self, n: int) -> dict[str, Any]:
        conn = self.connect(autocommit=False)
        try:
            conn.execute(f"SET search_path TO {self.floor_schema}")
            conn.commit()
            payload = json.dumps({"order": 12345, "step": "authorize_payment"})
            samples: list[float] = []
            warmup = 20
            cpu0 = 0.0
            server0 = 0.0
            for i in range(n + warmup):
                if i == warmup:
                    cpu0 = time.thread_time()
                    server0 = self.server_cpu.seconds() if self.server_cpu else 0.0
                t0 = time.perf_counter_ns()
                conn.execute(
                    "INSERT INTO floor_rows (workflow_id, position, output) VALUES (%s, %s, %s)",
                    (f"wf-{i}", str(i % 4), payload),
                )
                conn.commit()
                samples.append((time.perf_counter_ns() - t0) / 1000)
            cpu = time.thread_time() - cpu0
            server = (self.server_cpu.seconds() - server0) if self.server_cpu else None
        finally:
            conn.close()
        return _floor_summary(n, samples, cpu, warmup, server)

    def describe(self) -> dict[str, Any]:
        parts = self._parts
        return {
            "store": "postgresql",
            "url": urlunsplit(parts._replace(netloc=parts.netloc.split("@")[-1])),
            "server": self.settings,
            "server_cpu_measured": self.server_cpu is not None,
        }

    def title(self) -> str:
        s = self.settings
        return (
            f"PostgreSQL {s.get('server_version', '?')} over TCP to {self._parts.hostname}, "
            f"fsync={s.get('fsync')}, synchronous_commit={s.get('synchronous_commit')}, "
            f"wal_sync_method={s.get('wal_sync_method')}"
        )

    def close(self) -> None:
        self.drop(self.floor_schema)
        if self._admin is not None:
            self._admin.close()


Workspace = SQLiteWorkspace | PostgresWorkspace


def floor_plain(n: int) -> dict[str, Any]:
    """The four checkout steps as plain Python calls."""
    t0 = time.perf_counter_ns()
    for i in range(n):
        plain_checkout(i)
    per_checkout = (time.perf_counter_ns() - t0) / 1000 / n
    return {"n": n, "checkout_us": per_checkout, "step_us": per_checkout / 4}


# -- 2. sequential latency -----------------------------------------------------------------


def sequential(ws: Workspace, warmup: int, timed: int) -> dict[str, Any]:
    db = ws.new("sequential")
    try:
        w = build(db.url)
        app = w.app
        samples: list[float] = []
        with app:
            for i in range(warmup):
                app.run(w.checkout, f"warm-{i}")
            COMMITS.reset()
            cpu = CPU(ws)
            wall0 = time.perf_counter()
            for i in range(timed):
                t0 = time.perf_counter_ns()
                result = app.run(w.checkout, f"order-{i}")
                samples.append((time.perf_counter_ns() - t0) / 1e6)
                assert result == {"order": f"order-{i}", "step": "confirm_order"}, result
            wall = time.perf_counter() - wall0
            used = cpu.stop(timed)
            commits = COMMITS.summary(timed)
    finally:
        db.close()
    ordered = sorted(samples)
    return {
        "warmup": warmup,
        "n": timed,
        "p50_ms": statistics.median(ordered),
        "p99_ms": percentile(ordered, 99),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "cpu_ms_per_checkout": used["cpu_ms"],
        "server_cpu_ms_per_checkout": used["server_cpu_ms"],
        "cpu_cores": (used["cpu_s"] or 0.0) / wall,
        "commits": commits,
        "samples_ms": samples,
    }


# -- 3. step overhead ----------------------------------------------------------------------


def step_overhead(ws: Workspace, n_steps: int, repeats: int) -> dict[str, Any]:
    db = ws.new("steps")
    try:
        w = build(db.url)
        app = w.app
        per_step: list[float] = []
        cpu_per_step: list[float] = []
        server_per_step: list[float] = []
        with app:
            app.run(w.many_steps, 20)  # warm-up: store open, pool thread started
            COMMITS.reset()
            for _ in range(repeats):
                cpu = CPU(ws)
                t0 = time.perf_counter_ns()
                assert app.run(w.many_steps, n_steps) == n_steps
                per_step.append((time.perf_counter_ns() - t0) / 1000 / n_steps)
                used = cpu.stop(n_steps)
                cpu_per_step.append((used["cpu_ms"] or 0.0) * 1000)
                if used["server_cpu_ms"] is not None:
                    server_per_step.append(used["server_cpu_ms"] * 1000)
            commits = COMMITS.summary(repeats)
        summary = db.summary()
    finally:
        db.close()
    assert summary["steps"] == 20 + repeats * n_steps, summary
    return {
        "steps": n_steps,
        "repeats": repeats,
        "per_step_us": statistics.median(per_step),
        "per_step_us_all": per_step,
        "cpu_us_per_step": statistics.median(cpu_per_step),
        "server_cpu_us_per_step": statistics.median(server_per_step) if server_per_step else None,
        "commits": commits,
    }


# -- 4. throughput -------------------------------------------------------------------------


def _drive_sync_loop(app: Any, fn: Any, n: int) -> None:
    handles = [app.start(fn, f"order-{i}") for i in range(n)]
    for handle in handles:
        handle.result(timeout=120)


def _drive_gather(app: Any, fn: Any, n: int) -> None:
    async def main() -> None:
        handles = await asyncio.gather(*(app.start_async(fn, f"order-{i}") for i in range(n)))
        await asyncio.gather(*(handle.result_async(timeout=120) for handle in handles))

    asyncio.run(main())


def _throughput_once(
    ws: Workspace, label: str, n: int, fn_name: str, drive: Callable[[Any, Any, int], None]
) -> dict[str, Any]:
    db = ws.new(label)
    try:
        w = build(db.url)
        app = w.app
        fn = getattr(w, fn_name)
        with app:
            app.run(fn, "warm-up")
            COMMITS.reset()
            cpu = CPU(ws)
            t0 = time.perf_counter()
            drive(app, fn, n)
            wall = time.perf_counter() - t0
            used = cpu.stop(n)
            commits = COMMITS.summary(n)
        done = db.count()
    finally:
        db.close()
    assert done == n + 1, f"{label}: {done} of {n + 1} SUCCEEDED"
    return {
        "wall_s": wall,
        "per_s": n / wall,
        "cpu_ms_per_checkout": used["cpu_ms"],
        "server_cpu_ms_per_checkout": used["server_cpu_ms"],
        "cpu_cores": (used["cpu_s"] or 0.0) / wall,
        "commits": commits,
    }


def _throughput(
    ws: Workspace,
    label: str,
    n: int,
    repeats: int,
    fn_name: str,
    drive: Callable[[Any, Any, int], None],
) -> dict[str, Any]:
    runs = [_throughput_once(ws, label, n, fn_name, drive) for _ in range(repeats)]
    middle = sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]
    return {
        "n": n,
        "repeats": repeats,
        **middle,
        "per_s_all": [r["per_s"] for r in runs],
    }


def throughput_sync(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Sync-def checkout, sync client: a loop of app.start(), then each handle.result()."""
    return _throughput(ws, "throughput-sync", n, repeats, "checkout", _drive_sync_loop)


def throughput_sync_gather(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Sync-def checkout submitted all at once: gather(start_async), gather(result_async)."""
    return _throughput(ws, "throughput-sync-gather", n, repeats, "checkout", _drive_gather)


def throughput_async(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Async-def checkout with async steps: gather(start_async), gather(result_async)."""
    return _throughput(ws, "throughput-async", n, repeats, "checkout_async", _drive_gather)


# -- 5. recovery ---------------------------------------------------------------------------


def _worker_command() -> list[str]:
    script = Path(sys.executable).with_name("perdure")
    if script.exists():
        return [str(script), "worker", "bench.workloads:app"]
    return [sys.executable, "-m", "perdure", "worker", "bench.workloads:app"]


def _spawn_worker(
    url: str, log_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PERDURE_DATABASE_URL": url, **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            _worker_command(), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _first_log_time(log_path: Path) -> float | None:
    """Wall time (epoch s) of the first timestamped line of a worker's log: the worker's
    logging starts when its executor is up (module imported, store opened)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            stamp = _dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue
        return stamp.timestamp()
    return None


def _submit(app: Any, fn: Any, n: int, prefix: str) -> None:
    async def submit() -> None:
        await asyncio.gather(*(app.start_async(fn, f"{prefix}-{i}") for i in range(n)))

    asyncio.run(submit())


def _recovery_once(ws: Workspace, logs: Path, n: int, kill_fraction: float) -> dict[str, Any]:
    db = ws.new("recovery")
    try:
        client = build(db.url)
        # No executor in this process: all n are PENDING, and durable.
        _submit(client.app, client.checkout, n, "order")
        client.app.shutdown()

        # Worker A: let it get some way into the n, then kill it without warning.
        log_a = logs / f"{db.label}-worker-a.log"
        proc_a = _spawn_worker(db.url, log_a)
        kill_at = int(n * kill_fraction)
        deadline = time.monotonic() + 120
        try:
            while db.count() < kill_at:
                if proc_a.poll() is not None:
                    raise RuntimeError(f"worker A exited early: {log_a.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("worker A made no progress in 120 s")
                time.sleep(0.005)
        finally:
            proc_a.send_signal(signal.SIGKILL)
            proc_a.wait()
        at_kill = db.summary()

        # Worker B: from its process start until all n are SUCCEEDED.
        log_b = logs / f"{db.label}-worker-b.log"
        wall_start = time.time()
        t0 = time.perf_counter()
        proc_b = _spawn_worker(db.url, log_b)
        deadline = time.monotonic() + 120
        try:
            while True:
                done = db.count()
                if done >= n:
                    elapsed = time.perf_counter() - t0
                    break
                if proc_b.poll() is not None:
                    raise RuntimeError(f"worker B exited: {log_b.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"recovery: only {done} of {n} done after 120 s")
                time.sleep(0.01)
        finally:
            _stop_worker(proc_b)
        started = _first_log_time(log_b)
        final = db.summary()
    finally:
        db.close()
    assert final.get("succeeded") == n and final["steps"] == 4 * n, final
    return {
        "seconds": elapsed,
        "worker_startup_s": None if started is None else max(0.0, started - wall_start),
        "killed_after_succeeded": at_kill.get("succeeded", 0),
        "at_kill": at_kill,
        "final": final,
    }


def recovery(
    ws: Workspace, logs: Path, n: int, repeats: int, kill_fraction: float = 0.25
) -> dict[str, Any]:
    """n checkouts started; worker A killed with SIGKILL once ``kill_fraction`` of them
    finished; seconds from worker B's process start until all n are SUCCEEDED."""
    runs = [_recovery_once(ws, logs, n, kill_fraction) for _ in range(repeats)]
    middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {
        "n": n,
        "repeats": repeats,
        **middle,
        "seconds_max": max(r["seconds"] for r in runs),
        "seconds_all": [r["seconds"] for r in runs],
    }


# -- 6. waiting cost -----------------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process, from /proc/<pid>/status."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def _memory(pid: int) -> dict[str, float]:
    st = _proc_status(pid)
    return {
        "rss_mb": st["VmRSS"] / 1024,
        "peak_rss_mb": st["VmHWM"] / 1024,
        "threads": st["Threads"],
    }


def _suspended(db: Any) -> int:
    rows = db._rows(
        "SELECT count(*) FROM perdure_workflows WHERE status IN ('PENDING', 'RUNNING') "
        "AND owner IS NULL AND wake_at IS NOT NULL"
    )
    return int(rows[0][0])


def waiting(ws: Workspace, logs: Path, n: int) -> dict[str, Any]:
    """One ``perdure worker`` process; a client (App not launched) starts n workflows,
    half a durable sleep of an hour, half a ``recv`` with an hour's timeout. Once all n
    are suspended in the store: the worker's resident memory and threads, beside the
    same taken while it was idle before the first submission."""
    db = ws.new("waiting")
    client = build(db.url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        client.app.store  # migrate before the worker starts  # noqa: B018
        log_path = logs / f"{db.label}-worker.log"
        proc = _spawn_worker(db.url, log_path)
        deadline = time.monotonic() + 60
        while db.executors() < 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        time.sleep(1.0)  # let it settle into its idle polling
        idle = _memory(proc.pid)
        peak_threads = idle["threads"]

        half = n // 2
        t0 = time.perf_counter()

        async def submit() -> None:
            await asyncio.gather(
                *(client.app.start_async(client.waiter, i) for i in range(half)),
                *(client.app.start_async(client.receiver, i) for i in range(half, n)),
            )

        asyncio.run(submit())
        submitted = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        while (suspended := _suspended(db)) < n:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"waiting: only {suspended} of {n} suspended after 120 s")
            peak_threads = max(peak_threads, _proc_status(proc.pid)["Threads"])
            time.sleep(0.05)
        to_suspend = time.perf_counter() - t0
        at_suspend = _memory(proc.pid)
        time.sleep(2.0)  # the worker polls on, holding nothing for the n
        settled = _memory(proc.pid)
        peak_threads = max(peak_threads, at_suspend["threads"], settled["threads"])
    finally:
        if proc is not None:
            _stop_worker(proc)
        client.app.shutdown()
        final = db.summary()
        db.close()
    assert final.get("succeeded", 0) == 0 and final["recoveries"] == 0, final
    worker_settings = json.loads(os.environ.get("PERDURE_BENCH_APP_SETTINGS") or "{}")
    return {
        "n": n,
        # The worker's pool of workflow threads: it grows to this bound under load and
        # keeps its threads, whatever the number of workflows waiting.
        "max_threads": worker_settings.get("max_threads", client.app.settings.max_threads),
        "sleeping": half,
        "receiving": n - half,
        "idle": idle,
        "all_suspended": at_suspend,
        "settled_2s": settled,
        "peak_threads": peak_threads,
        "submit_s": submitted,
        "to_suspend_s": to_suspend,
        "rss_growth_kb_per_workflow": (settled["rss_mb"] - idle["rss_mb"]) * 1024 / n,
        "final": final,
    }


# -- 7. multi-process throughput (PostgreSQL) ------------------------------------------------


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


def _multiprocess_once(
    ws: Workspace, logs: Path, workers: int, fn_name: str, n: int, warmup: int
) -> dict[str, Any]:
    db = ws.new(f"mp-{fn_name}-{workers}")
    probe_dir = Path(tempfile.mkdtemp(prefix="perdure-bench-probe-"))
    procs: list[subprocess.Popen[bytes]] = []
    client = build(db.url)
    try:
        fn = getattr(client, fn_name)
        client.app.store  # migrate before the workers start  # noqa: B018
        for k in range(workers):
            procs.append(
                _spawn_worker(
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
        _submit(client.app, fn, warmup, "warm")
        while db.count() < warmup:
            if time.monotonic() > deadline:
                raise RuntimeError("warm-up did not finish in time")
            time.sleep(0.01)
        pids = [p.pid for p in procs]
        before = _probe_snapshot(probe_dir, 1, pids)
        load = Load(ws.server_cpu)
        own0 = time.process_time()
        t0 = time.perf_counter()
        _submit(client.app, fn, n, "order")
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
            _stop_worker(proc)
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
    async-def checkout: workflows/s from the first submission until all n are done."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for fn_name in ("checkout", "checkout_async"):
        for workers in worker_counts:
            key = f"{fn_name}/{workers}"
            runs[key] = []
            for _ in range(repeats):
                log(f"  {workers} worker(s), {fn_name} ...")
                runs[key].append(
                    _multiprocess_once(ws, logs, workers, fn_name, n, warmup=10 * workers)
                )
    medians = {}
    for key, tries in runs.items():
        middle = sorted(tries, key=lambda r: r["per_s"])[len(tries) // 2]
        medians[key] = {**middle, "per_s_all": [r["per_s"] for r in tries]}
    return {"n": n, "repeats": repeats, "workers": worker_counts, "runs": medians}


# -- machine -------------------------------------------------------------------------------


def filesystem(path: Path) -> dict[str, str]:
    fs = {"mount": "?", "device": "?", "type": "?", "options": "?"}
    try:
        best = ""
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind, options = line.split()[:4]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best = mount
                fs = {"mount": mount, "device": device, "type": kind, "options": options}
    except OSError:
        pass
    return fs


def _src_modified() -> bool:
    try:
        return bool(
            subprocess.run(
                ["git", "status", "--porcelain", "src"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except OSError:
        return False


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = "?"
    import perdure

    # The perdure measured: this checkout's src/ (as installed in the venv), or another
    # copy put first on PYTHONPATH (e.g. an export of a commit: git archive HEAD src).
    path = Path(perdure.__file__).resolve().parent
    local = path == (ROOT / "src" / "perdure").resolve()
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        loadavg = []
    try:
        import psycopg

        psycopg_version = f"{psycopg.__version__} ({psycopg.pq.__impl__})"
    except ImportError:
        psycopg_version = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "psycopg": psycopg_version,
        "platform": platform.platform(),
        "perdure_path": str(path),
        "perdure_commit": commit if local else f"? (not this checkout's src/; HEAD is {commit})",
        "src_modified": _src_modified() if local else None,
        "loadavg_at_start": loadavg,
    }


# -- the report ----------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


def _commits_note(section: dict[str, Any]) -> str:
    commits = section.get("commits")
    if not commits:
        return ""
    return f", {commits['commits_per_workflow']:.2f} commits/wf"


def table(results: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    rows: list[list[str]] = []
    checks: dict[str, Any] = {}
    floor = results["floor"]
    overall = floor["commit_us"]
    plain = floor["plain"]
    rows.append(
        ["floor (i): the 4 steps as plain calls", f"{plain['checkout_us']:.2f} µs", "", "", "", ""]
    )
    start, end = floor["commit_start"], floor.get("commit_end")
    spread = f"start {start['median_us']:.0f}"
    if end:
        spread += f", end {end['median_us']:.0f}"
    cpu = f"cpu {start['cpu_us']:.0f}"
    if start.get("server_cpu_us") is not None:
        cpu += f" + server {start['server_cpu_us']:.0f}"
    rows.append(
        [
            "floor (ii): INSERT+COMMIT, median",
            f"{overall:.1f} µs (run {spread}; {cpu})",
            "",
            "1x",
            "",
            "",
        ]
    )
    seq = results.get("sequential")
    if seq:
        commit = seq["floor_us"]
        commit_txt = f"{commit:.1f} µs"
        ratio = seq["p50_ms"] * 1000 / commit
        ok = ratio <= TARGETS["sequential_p50_commits"]
        checks["sequential_p50"] = {"ms": seq["p50_ms"], "ratio": ratio, "met": ok}
        rows.append(
            [
                "sequential checkout, p50",
                f"{seq['p50_ms']:.3f} ms{_commits_note(seq)}",
                commit_txt,
                f"{ratio:.1f}x",
                "<= 8x",
                verdict(ok),
            ]
        )
        rows.append(
            [
                "sequential checkout, p99",
                f"{seq['p99_ms']:.3f} ms",
                commit_txt,
                f"{seq['p99_ms'] * 1000 / commit:.1f}x",
                "",
                "",
            ]
        )
    steps = results.get("steps")
    if steps:
        commit = steps["floor_us"]
        commit_txt = f"{commit:.1f} µs"
        ratio = steps["per_step_us"] / commit
        ok = ratio <= TARGETS["step_overhead_commits"]
        checks["step_overhead"] = {"us": steps["per_step_us"], "ratio": ratio, "met": ok}
        rows.append(
            [
                f"step overhead, {steps['steps']} steps",
                f"{steps['per_step_us']:.1f} µs/step",
                commit_txt,
                f"{ratio:.2f}x",
                "<= 1.5x",
                verdict(ok),
            ]
        )
    for key, label, targeted in (
        ("throughput_sync", "throughput, sync def, app.start loop", True),
        ("throughput_sync_gather", "throughput, sync def, gather(start_async)", False),
        ("throughput_async", "throughput, async def, gather(start_async)", True),
    ):
        tp = results.get(key)
        if not tp:
            continue
        commit = tp["floor_us"]
        commit_txt = f"{commit:.1f} µs"
        ok = tp["per_s"] >= TARGETS["throughput_per_s"]
        if targeted:
            checks[key] = {"per_s": tp["per_s"], "met": ok}
        # Wall time per checkout in floor commits: < 6 means commits were shared.
        per_checkout = 1e6 / tp["per_s"] / commit
        rows.append(
            [
                label,
                f"{tp['per_s']:.0f} wf/s{_commits_note(tp)}",
                commit_txt,
                f"{per_checkout:.2f}x",
                ">= 1000/s" if targeted else "(info)",
                verdict(ok) if targeted else "",
            ]
        )
    rec = results.get("recovery")
    if rec:
        ok = rec["seconds_max"] <= TARGETS["recovery_s"]
        checks["recovery"] = {"seconds": rec["seconds"], "max": rec["seconds_max"], "met": ok}
        start_s = rec.get("worker_startup_s")
        extra = f", startup {start_s:.2f} s" if start_s is not None else ""
        rows.append(
            [
                f"recovery, {rec['n']} checkouts",
                f"{rec['seconds']:.2f} s (max {rec['seconds_max']:.2f}{extra})",
                "",
                "",
                "<= 10 s",
                verdict(ok),
            ]
        )
    wait = results.get("waiting")
    if wait:
        idle, held = wait["idle"], wait["settled_2s"]
        rss = max(held["rss_mb"], wait["all_suspended"]["rss_mb"])
        rss_ok = rss < TARGETS["waiting_rss_mb"]
        # "No thread each": the worker's threads stay within its pool's bound (idle
        # threads + max_threads), whatever the number of waiting workflows.
        bound = idle["threads"] + wait["max_threads"]
        threads_ok = held["threads"] <= bound and wait["peak_threads"] <= bound
        checks["waiting"] = {
            "rss_mb": rss,
            "idle_rss_mb": idle["rss_mb"],
            "threads_idle": idle["threads"],
            "threads_waiting": held["threads"],
            "peak_threads": wait["peak_threads"],
            "met": rss_ok and threads_ok,
        }
        rows.append(
            [
                f"waiting cost, {wait['n']} suspended, worker RSS",
                f"{rss:.1f} MB (idle {idle['rss_mb']:.1f}, peak {held['peak_rss_mb']:.1f}; "
                f"all suspended in {wait['to_suspend_s']:.2f} s)",
                "",
                "",
                "< 200 MB",
                verdict(rss_ok),
            ]
        )
        rows.append(
            [
                "waiting cost, worker threads",
                f"{held['threads']} (idle {idle['threads']}, "
                f"at most {wait['peak_threads']} while suspending)",
                "",
                "",
                f"<= {idle['threads']}+{wait['max_threads']}",
                verdict(threads_ok),
            ]
        )
    return rows, checks


def multiprocess_table(section: dict[str, Any]) -> list[list[str]]:
    rows = []
    for run in section["runs"].values():
        server = run["server_cpu_ms_per_checkout"]
        rows.append(
            [
                "sync def" if run["workflow"] == "checkout" else "async def",
                str(run["workers"]),
                f"{run['per_s']:.0f}",
                f"{run['wall_s']:.2f} (submit {run['submit_s']:.2f})",
                "/".join(str(c) for c in run["completed_by_worker"]),
                f"{run['worker_cpu_ms_per_checkout']:.2f}",
                "?" if server is None else f"{server:.2f}",
                f"{run['client_cpu_ms_per_checkout']:.2f}",
                f"{run['worker_commits']['commits_per_workflow']:.2f}",
                f"{run['cores_used']:.2f}",
            ]
        )
    return rows


def print_table(rows: list[list[str]], title: str, header: list[str] | None = None) -> None:
    header = header or ["figure", "measured", "floor", "vs floor", "target", "result"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(title)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


MP_HEADER = [
    "workflow",
    "workers",
    "wf/s",
    "wall s",
    "done by each worker",
    "worker cpu ms/wf",
    "server cpu ms/wf",
    "client cpu ms/wf",
    "commits/wf",
    "cores",
]


# -- main ----------------------------------------------------------------------------------


def run_store(
    ws: Workspace,
    counts: dict[str, int],
    only: set[str],
    complete: bool,
    worker_counts: list[int],
    logs: Path,
) -> dict[str, Any]:
    """Every figure of one store, each bracketed by floor commits."""
    results: dict[str, Any] = {
        **ws.describe(),
        "title": ws.title(),
        "diagnostics": {"commit_counter": COMMITS.installed},
    }
    started = time.perf_counter()
    whole = Load(ws.server_cpu)
    results["floor"] = {
        "commit_start": ws.floor_commit(counts["floor_commits"]),
        "plain": floor_plain(counts["floor_plain"]),
    }
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "sequential": lambda: sequential(ws, counts["seq_warmup"], counts["seq_timed"]),
        "steps": lambda: step_overhead(ws, counts["steps"], counts["steps_repeats"]),
        "throughput_sync": lambda: throughput_sync(
            ws, counts["throughput"], counts["throughput_repeats"]
        ),
        "throughput_sync_gather": lambda: throughput_sync_gather(
            ws, counts["throughput"], counts["throughput_repeats"]
        ),
        "throughput_async": lambda: throughput_async(
            ws, counts["throughput"], counts["throughput_repeats"]
        ),
        "recovery": lambda: recovery(ws, logs, counts["recovery"], counts["recovery_repeats"]),
        "waiting": lambda: waiting(ws, logs, counts["waiting"]),
        "multiprocess": lambda: multiprocess(
            ws, logs, worker_counts, counts["mp_n"], counts["mp_repeats"]
        ),
    }
    floor_samples: list[float] = []
    for name in SECTIONS:
        if name not in only or ws.store not in STORE_SECTIONS.get(name, STORES):
            continue
        restarts = 0
        while True:
            log(f"[{ws.store}] running {name} ...")
            t0 = time.perf_counter()
            load = Load(ws.server_cpu)
            warnings0 = LOG_COUNT.count
            epoch = ws.epoch()
            error: Exception | None = None
            try:
                before = ws.floor_commit(counts["floor_bracket"])
                section = sections[name]()
                after = ws.floor_commit(counts["floor_bracket"])
            except Exception as exc:  # noqa: BLE001 - re-raised unless the server restarted
                error = exc
            restarted = ws.epoch() != epoch
            if not restarted:
                if error is not None:
                    raise error
                break
            # Another session restarted the PostgreSQL server during the figure (crash
            # tests on a shared machine): the figure means nothing, measure it again.
            restarts += 1
            log(f"  the PostgreSQL server restarted during {name}; measuring it again")
            if restarts >= MAX_RESTARTS:
                raise RuntimeError(
                    f"{name}: the PostgreSQL server restarted {restarts} times during it"
                ) from error
            ws.wait_for_server()
            time.sleep(RESTART_PAUSE)
        results[name] = section
        section["foreign_cores"] = load.foreign_cores()
        section["server_restarts"] = restarts
        section["log_warnings"] = LOG_COUNT.count - warnings0
        # The floor of this figure's ratios: commits measured right before and after it.
        bracket = before.pop("samples_us") + after.pop("samples_us")
        floor_samples.extend(bracket)
        section["floor_us"] = statistics.median(bracket)
        section["floor_before_us"] = before["median_us"]
        section["floor_after_us"] = after["median_us"]
        section["elapsed_s"] = time.perf_counter() - t0
        log(
            f"  {name} took {section['elapsed_s']:.1f} s "
            f"(other processes used {section['foreign_cores']:.2f} cores meanwhile)"
        )
    if complete:
        results["floor"]["commit_end"] = ws.floor_commit(counts["floor_commits"])
    # The run's overall floor: the median over every floor sample of the run.
    for key in ("commit_start", "commit_end"):
        floor_samples.extend(results["floor"].get(key, {}).pop("samples_us", []))
    results["floor"]["commit_us"] = statistics.median(floor_samples)
    results["foreign_cores"] = whole.foreign_cores()
    results["server_cores"] = (
        whole.server_seconds() / (time.perf_counter() - whole.wall0) if ws.server_cpu else None
    )
    results["elapsed_s"] = time.perf_counter() - started
    if "sequential" in results:
        results["sequential"].pop("samples_ms", None)
    return results


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1: {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="perdure's benchmark on SQLite and PostgreSQL (see ../shared/BENCHMARK.md)"
    )
    parser.add_argument(
        "--store",
        action="append",
        choices=STORES,
        help="run this store (repeatable); default: both, PostgreSQL only if reachable",
    )
    parser.add_argument(
        "--quick", action="store_true", help="reduced counts (~20 s for both stores)"
    )
    parser.add_argument(
        "--synchronous", choices=("full", "normal"), default="full", help="SQLite's setting"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PERDURE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help=f"the PostgreSQL database (default {DEFAULT_POSTGRES_URL}, or "
        "$PERDURE_BENCH_POSTGRES_URL); every figure gets a schema bench_<hex>, dropped after",
    )
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=[1, 2, 4],
        help="worker process counts of the multi-process figure (default 1,2,4)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this figure (repeatable); the floor is always measured",
    )
    parser.add_argument("--dir", default=None, help="parent of the temporary SQLite databases")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary databases, schemas and logs"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="wait up to this many seconds for other processes to go quiet first "
        "(default 30, or 0 with --quick/--only)",
    )
    parser.add_argument(
        "--output", default=str(RESULTS / "latest.json"), help="where to write the JSON result"
    )
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    only = set(args.only or SECTIONS)
    complete = not args.quick and args.only is None
    settle_for = args.settle if args.settle is not None else (30.0 if complete else 0.0)
    stores = list(dict.fromkeys(args.store or STORES))
    explicit = bool(args.store)

    results: dict[str, Any] = {
        "benchmark": "perdure benchmark (../shared/BENCHMARK.md)",
        "command": " ".join([Path(sys.executable).name, "bench/run.py", *(argv or sys.argv[1:])]),
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "counts": counts,
        "machine": machine(),
        # Settings for the worker processes' App (an experiment; unset in the benchmark).
        "worker_app_settings": os.environ.get("PERDURE_BENCH_APP_SETTINGS"),
        "stores": {},
    }
    logs = Path(tempfile.mkdtemp(prefix="perdure-bench-logs-", dir=args.dir))
    capture_logs(logs / "bench.log")
    started = time.perf_counter()
    whole = Load()
    try:
        if settle_for > 0:
            log(f"waiting up to {settle_for:.0f} s for the machine to be quiet ...")
            results["settle"] = settle(settle_for)
            if not results["settle"]["quiet"]:
                log(
                    f"  still busy: other processes use "
                    f"{results['settle']['foreign_cores']:.2f} cores; measuring anyway"
                )
        for store in stores:
            ws: Workspace
            if store == "sqlite":
                ws = SQLiteWorkspace(args.dir, args.synchronous, args.keep)
            else:
                try:
                    ws = PostgresWorkspace(args.postgres_url, args.keep)
                except Exception as exc:
                    if explicit:
                        raise
                    log(f"PostgreSQL skipped: cannot use {args.postgres_url}: {exc}")
                    results["stores"]["postgresql"] = {"skipped": str(exc)}
                    continue
            log(f"[{store}] {ws.title()}")
            try:
                results["stores"][store] = run_store(ws, counts, only, complete, args.workers, logs)
            finally:
                ws.close()
        results["foreign_cores"] = whole.foreign_cores()
        results["elapsed_s"] = time.perf_counter() - started
        if results["machine"]["src_modified"] is not None:
            # Other people may edit src/ while the benchmark runs (workers import it anew).
            results["src_modified_at_end"] = _src_modified()
    finally:
        results["log_warnings"] = LOG_COUNT.count
        if args.keep or LOG_COUNT.count:
            log(
                f"{LOG_COUNT.count} warnings from perdure/psycopg in this process; "
                f"logs (bench.log and the workers') kept in {logs}"
            )
        else:
            shutil.rmtree(logs, ignore_errors=True)

    m = results["machine"]
    print(
        f"\nperdure benchmark{' (quick)' if args.quick else ''}: {m['nproc']} x {m['cpu']}, "
        f"Python {m['python']}, psycopg {m['psycopg']}, perdure {m['perdure_commit']}"
        f"{' + changes in src/' if m['src_modified'] else ''} ({m['perdure_path']})"
    )
    if results.get("src_modified_at_end") and not m["src_modified"]:
        print("warning: src/ was modified while the benchmark ran")
    if results["worker_app_settings"]:
        print(f"worker processes ran with App settings {results['worker_app_settings']}")
    for store, res in results["stores"].items():
        if "skipped" in res:
            print(f"\n{store}: skipped ({res['skipped']})")
            continue
        rows, checks = table(res)
        res["targets"] = checks
        res["table"] = rows
        print()
        print_table(rows, f"perdure on {res['title']}{' (quick)' if args.quick else ''}")
        mp = res.get("multiprocess")
        if mp:
            mp_rows = multiprocess_table(mp)
            res["multiprocess_table"] = mp_rows
            print()
            print_table(
                mp_rows,
                f"multi-process throughput: {mp['n']} checkouts started by a client, "
                "claimed by `perdure worker` processes",
                MP_HEADER,
            )
        server = res.get("server_cores")
        server_txt = ""
        if server is not None:
            server_txt = (
                f"; the PostgreSQL server used {server:.2f} cores"
                if server == server
                else "; the PostgreSQL server restarted (its CPU is unknown)"
            )
        print(
            f"{store}: {res['elapsed_s']:.0f} s; other processes used "
            f"{res['foreign_cores']:.2f} cores on average meanwhile{server_txt}"
        )
    print(
        "\nfloor = median of the floor commits measured just before and after that figure; "
        "vs floor = figure / floor\n(throughput: wall time per checkout / floor; "
        "under 6 means checkouts shared commits)"
    )
    print(f"\n{results['elapsed_s']:.0f} s in all")

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, default=str, ensure_ascii=False) + "\n"
    output.write_text(text)
    if complete and output.resolve() == (RESULTS / "latest.json").resolve():
        for store, res in results["stores"].items():
            if "skipped" in res:
                continue
            name = f"sqlite-{args.synchronous}" if store == "sqlite" else "postgresql"
            single = {k: v for k, v in results.items() if k != "stores"}
            single["store"] = store
            single.update(res)
            (RESULTS / f"{name}.json").write_text(
                json.dumps(single, indent=2, default=str, ensure_ascii=False) + "\n"
            )
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
