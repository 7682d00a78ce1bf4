"""The SQLite workspace: a temporary folder in which every figure gets a fresh database
file, and the floor commit into SQLite in WAL with the store's ``synchronous``."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cpu import ServerCPU
from bench.database import workflow_summary
from bench.floor import floor_summary
from bench.machine import filesystem


class SQLiteDatabase:
    """One SQLite file."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = path
        # sqlite:/// + /absolute/path = four slashes.
        self.url = f"sqlite:///{path}?synchronous={synchronous}"
        self.label = path.stem

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()

    def count(self, status: str = "SUCCEEDED") -> int:
        rows = self.rows("SELECT count(*) FROM perdure_workflows WHERE status = ?", (status,))
        return int(rows[0][0])

    def executors(self) -> int:
        rows = self.rows("SELECT count(*) FROM perdure_executors WHERE stopped_at IS NULL")
        return int(rows[0][0])

    def summary(self) -> dict[str, int]:
        return workflow_summary(self.rows)

    def close(self) -> None:
        pass  # the workspace's folder goes at the end


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
        return floor_summary(n, samples, cpu, warmup, None)

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
