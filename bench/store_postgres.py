"""The PostgreSQL workspace: a database in which every figure gets a fresh schema
``bench_<hex>`` (perdure's ``?schema=``), and the floor commit into a plain table over TCP
with psycopg 3. Copes with the server restarting under it (other sessions' crash tests)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bench.common import log
from bench.cpu import ServerCPU, proc_stat
from bench.database import workflow_summary
from bench.floor import floor_summary
from bench.machine import filesystem

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

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
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
        rows = self.rows("SELECT count(*) FROM perdure_workflows WHERE status = ?", (status,))
        return int(rows[0][0])

    def executors(self) -> int:
        rows = self.rows("SELECT count(*) FROM perdure_executors WHERE stopped_at IS NULL")
        return int(rows[0][0])

    def summary(self) -> dict[str, int]:
        return workflow_summary(self.rows)

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
        stat = proc_stat(backend)
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
        return floor_summary(n, samples, cpu, warmup, server)

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
