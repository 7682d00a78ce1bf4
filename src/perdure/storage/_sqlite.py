"""The embedded store: one SQLite file, in WAL mode, on the standard ``sqlite3`` module.

All writes of a process go through one connection in one writer thread, which
groups concurrent writes into one transaction (see ``_batch``). Reads use one
connection per thread; WAL lets them run while the writer commits. Several
processes may share the file: SQLite serialises their writers with a busy
timeout.

Durability: ``synchronous=FULL`` by default, so a committed step survives a
power loss. ``?synchronous=normal`` in the URL trades that (a power loss, not a
process crash, may lose the last commits) for much cheaper commits.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .._errors import ConfigurationError, StoreError, StoreUnavailableError
from ._base import (
    BREAKER_TOPIC,
    CHILD_TOPIC,
    BreakerRecord,
    ExecutorRecord,
    Lease,
    NewWorkflow,
    StepRecord,
    Store,
    WorkflowRecord,
)
from ._batch import GroupCommitter
from ._queries import (
    BREAKER_COLUMNS,
    EXECUTOR_COLUMNS,
    STEP_COLUMNS,
    WF_COLUMNS,
    WHY_NOT_STORED,
    claim_candidates,
    list_query,
    migrations,
    parked_on,
)

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}


def split_statements(script: str) -> Iterator[str]:
    """Split a script into statements, so that a migration runs inside our transaction
    (``executescript`` would commit first)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if statement.rstrip(";").strip() and not _only_comments(statement):
                yield statement


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return StoreUnavailableError(
            f"the SQLite database stayed locked by another process: {exc}; "
            "raise busy_timeout in the URL or use PostgreSQL for many writers"
        )
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"SQLite failed: {exc}")
    return exc


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a busy database makes us wait at
    # BEGIN (within busy_timeout) instead of failing half-way through.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself failed (a deferred constraint, a full disk): a writer
        # connection left inside a transaction could never write again.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _insert_step(
    conn: sqlite3.Connection, workflow_id: str, lease: Lease, step: StepRecord
) -> bool:
    """Record a step: the fencing check and the write are one statement, no read before."""
    cursor = conn.execute(
        "INSERT INTO perdure_steps (workflow_id, position, name, status, output, error, "
        "attempts, next_attempt_at, updated_at) "
        "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM perdure_workflows "
        "WHERE id = ? AND owner = ? AND epoch = ? AND status = 'RUNNING') "
        "ON CONFLICT (workflow_id, position) DO UPDATE SET status = excluded.status, "
        "output = excluded.output, error = excluded.error, attempts = excluded.attempts, "
        "next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at "
        "WHERE perdure_steps.status IN ('RETRYING', 'WAITING')",
        (
            workflow_id,
            step.position,
            step.name,
            step.status,
            step.output,
            step.error,
            step.attempts,
            step.next_attempt_at,
            step.updated_at,
            workflow_id,
            lease.owner,
            lease.epoch,
        ),
    )
    return cursor.rowcount == 1


def _deliver(
    conn: sqlite3.Connection,
    workflow_id: str,
    topic: str,
    payload: str,
    idempotency_key: str | None,
    now: float,
) -> bool:
    """Store a message for the workflow (unless its key was used) and wake the workflow
    if it is suspended waiting on this topic; whether it was stored."""
    cursor = conn.execute(
        "INSERT INTO perdure_messages (workflow_id, topic, payload, idempotency_key, "
        "created_at) SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM perdure_workflows "
        "WHERE id = ? AND status IN ('PENDING', 'RUNNING')) "
        "ON CONFLICT (workflow_id, idempotency_key) DO NOTHING",
        (workflow_id, topic, payload, idempotency_key, now, workflow_id),
    )
    if cursor.rowcount != 1:
        return False
    conn.execute(
        "UPDATE perdure_workflows SET wake_at = ? WHERE id = ? AND owner IS NULL "
        "AND wait_topic = ? AND wake_at > ?",
        (now, workflow_id, topic, now),
    )
    return True


# The workflow and its descendants that are still active.
_ACTIVE_TREE = (
    "WITH RECURSIVE tree (id) AS (SELECT ? UNION SELECT w.id FROM perdure_workflows w "
    "JOIN tree ON w.parent_id = tree.id) "
)


_CANDIDATES = claim_candidates(
    ":%s", "(SELECT value FROM json_each(:names))", "(SELECT value FROM json_each(:dead))", True
)


class SQLiteStore(Store):
    """A ``Store`` in one SQLite file. URL: ``sqlite:///relative/path.db`` or
    ``sqlite:////absolute/path.db``, options ``?synchronous=full|normal`` and
    ``&busy_timeout=<ms>``."""

    kind = "sqlite"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise ConfigurationError(f"not a SQLite URL: {url!r} (expected sqlite:///file.db)")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ConfigurationError(f"the SQLite URL {url!r} names no file")
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        synchronous = options.pop("synchronous", "full").lower()
        if synchronous not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={synchronous!r} in {url!r}: use one of {sorted(_SYNCHRONOUS)}"
            )
        try:
            busy_timeout = int(options.pop("busy_timeout", "10000"))
        except ValueError as exc:
            raise ConfigurationError(f"busy_timeout in {url!r} must be milliseconds") from exc
        if options:
            raise ConfigurationError(f"unknown SQLite URL options {sorted(options)} in {url!r}")
        self.path = Path(path)
        self.synchronous = _SYNCHRONOUS[synchronous]
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        # Every reader connection, so that close() can close them from any thread.
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: GroupCommitter[sqlite3.Connection] = GroupCommitter(
            self._connect, _transaction, _translate, name=f"perdure-sqlite-writer:{self.path}"
        )

    def _connect(self) -> sqlite3.Connection:
        if self.path.parent and not self.path.parent.exists():
            raise ConfigurationError(f"the folder of the SQLite file {self.path} does not exist")
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout:d}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._connect()
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def _write(self, fn: Any) -> Any:
        return self._writer.submit(fn).result()

    # -- lifecycle -------------------------------------------------------------------

    def migrate(self) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE IF NOT EXISTS perdure_schema (version INTEGER NOT NULL)")
            # Every migration not applied yet, also one numbered below the newest applied
            # (migrations developed side by side may land in either order).
            applied = {row[0] for row in conn.execute("SELECT version FROM perdure_schema")}
            for version, script in migrations("sqlite"):
                if version not in applied:
                    for statement in split_statements(script):
                        conn.execute(statement)
                    conn.execute("INSERT INTO perdure_schema (version) VALUES (?)", (version,))

        self._write(apply)

    def close(self) -> None:
        self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(Exception):
                    conn.close()
            self._readers.clear()
        self._local = threading.local()

    # -- workflows -------------------------------------------------------------------

    def create_workflow(
        self, new: NewWorkflow, owner: str | None, lease_expires_at: float | None
    ) -> Future[tuple[WorkflowRecord, bool]]:
        status, epoch = ("RUNNING", 1) if owner else ("PENDING", 0)

        def insert(conn: sqlite3.Connection) -> tuple[WorkflowRecord, bool]:
            row = conn.execute(
                "INSERT INTO perdure_workflows (id, name, status, inputs, serializer, "
                "app_version, owner, epoch, lease_expires_at, created_at, updated_at, "
                "parent_id, deadline_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"ON CONFLICT (id) DO NOTHING RETURNING {WF_COLUMNS}",
                (
                    new.id,
                    new.name,
                    status,
                    new.inputs,
                    new.serializer,
                    new.app_version,
                    owner,
                    epoch,
                    lease_expires_at,
                    new.created_at,
                    new.created_at,
                    new.parent_id,
                    new.deadline_at,
                ),
            ).fetchone()
            if row is not None:
                return WorkflowRecord(*row), True
            row = conn.execute(
                f"SELECT {WF_COLUMNS} FROM perdure_workflows WHERE id = ?", (new.id,)
            ).fetchone()
            return WorkflowRecord(*row), False

        return self._writer.submit(insert)

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        rows = self._read(
            f"SELECT {WF_COLUMNS} FROM perdure_workflows WHERE id = ?", (workflow_id,)
        )
        return WorkflowRecord(*rows[0]) if rows else None

    def list_workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[WorkflowRecord]:
        sql, params = list_query(
            "?", status, name, created_after, created_before, limit, newest_first
        )
        rows = self._read(sql, params)
        return [WorkflowRecord(*row) for row in rows]

    def complete_workflow(
        self,
        workflow_id: str,
        lease: Lease,
        status: str,
        output: str | None,
        error: str | None,
        now: float,
        parent_id: str | None = None,
    ) -> Future[bool]:
        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE perdure_workflows SET status = ?, output = ?, error = ?, owner = NULL, "
                "lease_expires_at = NULL, note = NULL, updated_at = ?, finished_at = ? "
                "WHERE id = ? AND owner = ? AND epoch = ? AND status IN ('PENDING', 'RUNNING')",
                (status, output, error, now, now, workflow_id, lease.owner, lease.epoch),
            )
            if cursor.rowcount != 1:
                return False
            if parent_id is not None:
                topic = CHILD_TOPIC + workflow_id
                payload = json.dumps([status, output, error])
                _deliver(conn, parent_id, topic, payload, topic, now)
            return True

        return self._writer.submit(update)

    def set_note(self, workflow_id: str, note: str | None, now: float) -> None:
        self._write(
            lambda conn: conn.execute(
                "UPDATE perdure_workflows SET note = ?, updated_at = ? WHERE id = ?",
                (note, now, workflow_id),
            )
        )

    # -- steps -----------------------------------------------------------------------

    def load_steps(self, workflow_id: str) -> list[StepRecord]:
        rows = self._read(
            f"SELECT {STEP_COLUMNS} FROM perdure_steps WHERE workflow_id = ? ORDER BY rowid",
            (workflow_id,),
        )
        return [StepRecord(*row) for row in rows]

    def record_step(self, workflow_id: str, lease: Lease, step: StepRecord) -> Future[bool]:
        return self._writer.submit(lambda conn: _insert_step(conn, workflow_id, lease, step))

    # -- executors and leases ----------------------------------------------------------

    def register_executor(self, executor: ExecutorRecord) -> None:
        self._write(
            lambda conn: conn.execute(
                f"INSERT OR REPLACE INTO perdure_executors ({EXECUTOR_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    executor.id,
                    executor.host,
                    executor.pid,
                    executor.app_version,
                    executor.started_at,
                    executor.heartbeat_at,
                    executor.lease_expires_at,
                    executor.stopped_at,
                ),
            )
        )

    def heartbeat(self, executor_id: str, now: float, lease_expires_at: float) -> set[str]:
        def renew(conn: sqlite3.Connection) -> set[str]:
            conn.execute(
                "UPDATE perdure_executors SET heartbeat_at = ?, lease_expires_at = ? WHERE id = ?",
                (now, lease_expires_at, executor_id),
            )
            rows = conn.execute(
                "UPDATE perdure_workflows SET lease_expires_at = ? "
                "WHERE owner = ? AND status IN ('PENDING', 'RUNNING') RETURNING id",
                (lease_expires_at, executor_id),
            ).fetchall()
            return {row[0] for row in rows}

        result: set[str] = self._write(renew)
        return result

    def list_executors(self) -> list[ExecutorRecord]:
        rows = self._read(
            f"SELECT {EXECUTOR_COLUMNS} FROM perdure_executors WHERE stopped_at IS NULL"
        )
        return [ExecutorRecord(*row) for row in rows]

    def claim_workflows(
        self,
        executor_id: str,
        names: Sequence[str],
        app_version: str,
        now: float,
        lease_expires_at: float,
        dead_owners: Sequence[str] = (),
        limit: int = 100,
    ) -> list[WorkflowRecord]:
        def claim(conn: sqlite3.Connection) -> list[WorkflowRecord]:
            # One writer at a time holds the SQLite write lock, so select-then-update
            # inside this transaction is atomic without row locks.
            rows = conn.execute(
                "UPDATE perdure_workflows SET owner = :me, epoch = epoch + 1, status = 'RUNNING', "
                "lease_expires_at = :lease, note = NULL, updated_at = :now, "
                "recoveries = recoveries + (status = 'RUNNING' AND wake_at IS NULL), "
                "wake_at = NULL, wait_topic = NULL "
                "WHERE id IN (SELECT id FROM perdure_workflows WHERE id IN ("
                + _CANDIDATES
                + ") ORDER BY created_at LIMIT :limit) "
                f"RETURNING {WF_COLUMNS}",
                {
                    "me": executor_id,
                    "lease": lease_expires_at,
                    "now": now,
                    "version": app_version,
                    "names": json.dumps(list(names)),
                    "dead": json.dumps(list(dead_owners)),
                    "limit": limit,
                },
            ).fetchall()
            return sorted((WorkflowRecord(*row) for row in rows), key=lambda r: r.created_at)

        result: list[WorkflowRecord] = self._write(claim)
        return result

    def unclaimable_workflows(
        self, names: Sequence[str], app_version: str, now: float, limit: int = 100
    ) -> list[WorkflowRecord]:
        rows = self._read(
            f"SELECT {WF_COLUMNS} FROM perdure_workflows "
            "WHERE status IN ('PENDING', 'RUNNING') AND (owner IS NULL OR lease_expires_at < ?) "
            "AND (wake_at IS NULL OR wake_at <= ?) "
            "AND (app_version != ? OR name NOT IN (SELECT value FROM json_each(?))) "
            "ORDER BY created_at LIMIT ?",
            (now, now, app_version, json.dumps(list(names)), limit),
        )
        return [WorkflowRecord(*row) for row in rows]

    def owned_workflows(self, executor_id: str) -> list[str]:
        rows = self._read(
            "SELECT id FROM perdure_workflows WHERE owner = ? AND status IN ('PENDING', 'RUNNING')",
            (executor_id,),
        )
        return [row[0] for row in rows]

    def release_workflows(self, executor_id: str, now: float) -> int:
        def release(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE perdure_workflows SET owner = NULL, lease_expires_at = NULL, "
                "updated_at = ? WHERE owner = ? AND status IN ('PENDING', 'RUNNING')",
                (now, executor_id),
            )
            conn.execute(
                "UPDATE perdure_executors SET stopped_at = ? WHERE id = ?", (now, executor_id)
            )
            return cursor.rowcount

        result: int = self._write(release)
        return result

    # -- waiting: timers, suspension, messages, events -----------------------------------

    def suspend_workflow(
        self, workflow_id: str, lease: Lease, wake_at: float, wait_topic: str | None, now: float
    ) -> Future[bool]:
        def suspend(conn: sqlite3.Connection) -> bool:
            # One writer at a time: a message sent (or a breaker closed) before this
            # statement is seen by it, one sent after it finds the workflow suspended and
            # wakes it.
            cursor = conn.execute(
                "UPDATE perdure_workflows SET owner = NULL, lease_expires_at = NULL, "
                "wait_topic = :topic, updated_at = :now, "
                "wake_at = CASE WHEN :topic IS NOT NULL AND EXISTS (SELECT 1 FROM "
                "perdure_messages WHERE workflow_id = :id AND topic = :topic "
                "AND consumed_at IS NULL) THEN :now "
                "WHEN EXISTS (SELECT 1 FROM perdure_breakers WHERE name = :breaker "
                "AND state = 'CLOSED') THEN :now ELSE :wake END "
                "WHERE id = :id AND owner = :owner AND epoch = :epoch AND status = 'RUNNING'",
                {
                    "id": workflow_id,
                    "owner": lease.owner,
                    "epoch": lease.epoch,
                    "topic": wait_topic,
                    "wake": wake_at,
                    "now": now,
                    "breaker": parked_on(wait_topic),
                },
            )
            return cursor.rowcount == 1

        return self._writer.submit(suspend)

    def next_wake_at(self, after: float) -> float | None:
        rows = self._read("SELECT min(wake_at) FROM perdure_workflows WHERE wake_at > ?", (after,))
        value: float | None = rows[0][0] if rows else None
        return value

    def send_message(
        self,
        workflow_id: str,
        topic: str,
        payload: str,
        idempotency_key: str | None,
        now: float,
    ) -> Future[bool | None]:
        def send(conn: sqlite3.Connection) -> bool | None:
            if _deliver(conn, workflow_id, topic, payload, idempotency_key, now):
                return True
            # Not stored: a repeated key (also once the workflow finished), or no active
            # workflow to receive it.
            row = conn.execute(
                WHY_NOT_STORED.replace("%s", "?"), (workflow_id, idempotency_key, workflow_id)
            ).fetchone()
            return None if row is None or not (row[0] or row[1]) else False

        return self._writer.submit(send)

    def consume_message(
        self, workflow_id: str, lease: Lease, topic: str, step: StepRecord, now: float
    ) -> Future[tuple[bool, str | None]]:
        def consume(conn: sqlite3.Connection) -> tuple[bool, str | None]:
            # The writer holds SQLite's write lock for the whole transaction: the checks and
            # the writes below are atomic together.
            fenced = conn.execute(
                "SELECT 1 FROM perdure_workflows WHERE id = ? AND owner = ? AND epoch = ? "
                "AND status = 'RUNNING' AND NOT EXISTS (SELECT 1 FROM perdure_steps "
                "WHERE workflow_id = ? AND position = ? AND status NOT IN ('RETRYING', 'WAITING'))",
                (workflow_id, lease.owner, lease.epoch, workflow_id, step.position),
            ).fetchone()
            if fenced is None:
                return False, None
            row = conn.execute(
                "SELECT seq, payload FROM perdure_messages WHERE workflow_id = ? AND topic = ? "
                "AND consumed_at IS NULL ORDER BY seq LIMIT 1",
                (workflow_id, topic),
            ).fetchone()
            if row is None:
                return True, None
            seq, payload = row
            conn.execute("UPDATE perdure_messages SET consumed_at = ? WHERE seq = ?", (now, seq))
            recorded = StepRecord(
                step.position, step.name, step.status, payload, None, step.attempts, None, now
            )
            if not _insert_step(conn, workflow_id, lease, recorded):
                raise StoreError(f"could not record the message for workflow {workflow_id!r}")
            return True, payload

        return self._writer.submit(consume)

    def set_event(self, workflow_id: str, lease: Lease, step: StepRecord, key: str) -> Future[bool]:
        def write(conn: sqlite3.Connection) -> bool:
            if not _insert_step(conn, workflow_id, lease, step):
                return False
            conn.execute(
                "INSERT INTO perdure_events (workflow_id, key, value, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (workflow_id, key) DO UPDATE SET "
                "value = excluded.value, updated_at = excluded.updated_at",
                (workflow_id, key, step.output, step.updated_at),
            )
            return True

        return self._writer.submit(write)

    def get_event(self, workflow_id: str, key: str) -> str | None:
        rows = self._read(
            "SELECT value FROM perdure_events WHERE workflow_id = ? AND key = ?",
            (workflow_id, key),
        )
        return rows[0][0] if rows else None

    # -- cancellation and continue_as_new ---------------------------------------------------

    def cancel_workflow(self, workflow_id: str, now: float) -> list[str] | None:
        def cancel(conn: sqlite3.Connection) -> list[str] | None:
            if (
                conn.execute(
                    "SELECT 1 FROM perdure_workflows WHERE id = ?", (workflow_id,)
                ).fetchone()
                is None
            ):
                return None
            rows = conn.execute(
                "UPDATE perdure_workflows SET cancel_requested_at = ?, updated_at = ?, "
                "wake_at = CASE WHEN owner IS NULL AND wake_at IS NOT NULL THEN ? "
                "ELSE wake_at END "
                f"WHERE id IN ({_ACTIVE_TREE}SELECT id FROM tree) "
                "AND status IN ('PENDING', 'RUNNING') AND cancel_requested_at IS NULL "
                "RETURNING id",
                (now, now, now, workflow_id),
            ).fetchall()
            return [row[0] for row in rows]

        result: list[str] | None = self._write(cancel)
        return result

    def cancel_requests(self, executor_id: str) -> list[str]:
        rows = self._read(
            "SELECT id FROM perdure_workflows WHERE owner = ? AND cancel_requested_at IS NOT NULL "
            "AND status IN ('PENDING', 'RUNNING')",
            (executor_id,),
        )
        return [row[0] for row in rows]

    def continue_workflow(
        self, workflow_id: str, lease: Lease, inputs: str, now: float
    ) -> Future[WorkflowRecord | None]:
        def restart(conn: sqlite3.Connection) -> WorkflowRecord | None:
            row = conn.execute(
                "UPDATE perdure_workflows SET inputs = ?, generation = generation + 1, "
                "updated_at = ? WHERE id = ? AND owner = ? AND epoch = ? AND status = 'RUNNING' "
                f"RETURNING {WF_COLUMNS}",
                (inputs, now, workflow_id, lease.owner, lease.epoch),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM perdure_steps WHERE workflow_id = ?", (workflow_id,))
            return WorkflowRecord(*row)

        return self._writer.submit(restart)

    # -- circuit breakers ------------------------------------------------------------------

    def get_breaker(self, name: str) -> BreakerRecord | None:
        rows = self._read(f"SELECT {BREAKER_COLUMNS} FROM perdure_breakers WHERE name = ?", (name,))
        return BreakerRecord(*rows[0]) if rows else None

    def list_breakers(self) -> list[BreakerRecord]:
        rows = self._read(
            f"SELECT {BREAKER_COLUMNS}, (SELECT count(*) FROM perdure_workflows "
            "WHERE wait_topic = ? || perdure_breakers.name AND owner IS NULL "
            "AND status IN ('PENDING', 'RUNNING')) FROM perdure_breakers ORDER BY name",
            (BREAKER_TOPIC,),
        )
        return [BreakerRecord(*row) for row in rows]

    def count_breaker_failure(
        self, name: str, now: float, threshold: int, window: float, retry_at: float, error: str
    ) -> bool:
        def count(conn: sqlite3.Connection) -> bool:
            # The writer holds SQLite's write lock: the count and the opening are atomic.
            conn.execute(
                "INSERT INTO perdure_breakers (name, state, updated_at) VALUES (?, 'CLOSED', ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, now),
            )
            row = conn.execute(
                "UPDATE perdure_breakers SET "
                "failures = CASE WHEN window_start IS NULL OR window_start + :window <= :now "
                "THEN 1 ELSE failures + 1 END, "
                "window_start = CASE WHEN window_start IS NULL OR window_start + :window <= :now "
                "THEN :now ELSE window_start END, last_error = :error, updated_at = :now "
                "WHERE name = :name AND state = 'CLOSED' RETURNING failures",
                {"name": name, "now": now, "window": window, "error": error},
            ).fetchone()
            if row is None or row[0] < threshold:
                return False
            conn.execute(
                "UPDATE perdure_breakers SET state = 'OPEN', opened_at = ?, retry_at = ? "
                "WHERE name = ?",
                (now, retry_at, name),
            )
            return True

        result: bool = self._write(count)
        return result

    def claim_breaker_probe(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE perdure_breakers SET state = 'HALF_OPEN', probe_holder = :holder, "
                "probe_expires_at = :expires, updated_at = :now WHERE name = :name "
                "AND ((state = 'OPEN' AND retry_at <= :now) OR (state = 'HALF_OPEN' "
                "AND (probe_expires_at <= :now OR probe_holder = :holder)))",
                {"name": name, "holder": holder, "now": now, "expires": expires_at},
            )
            return cursor.rowcount == 1

        result: bool = self._write(claim)
        return result

    def close_breaker(self, name: str, now: float) -> int | None:
        def close(conn: sqlite3.Connection) -> int | None:
            cursor = conn.execute(
                "UPDATE perdure_breakers SET state = 'CLOSED', failures = 0, window_start = NULL, "
                "retry_at = NULL, probe_holder = NULL, probe_expires_at = NULL, updated_at = ? "
                "WHERE name = ? AND state <> 'CLOSED'",
                (now, name),
            )
            if cursor.rowcount != 1:
                return None
            woken = conn.execute(
                "UPDATE perdure_workflows SET wake_at = ? WHERE wait_topic = ? "
                "AND owner IS NULL AND status = 'RUNNING' AND wake_at > ?",
                (now, BREAKER_TOPIC + name, now),
            )
            return woken.rowcount

        result: int | None = self._write(close)
        return result

    def reopen_breaker(
        self, name: str, holder: str, now: float, retry_at: float, error: str
    ) -> bool:
        def reopen(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE perdure_breakers SET state = 'OPEN', opened_at = ?, retry_at = ?, "
                "probe_holder = NULL, probe_expires_at = NULL, last_error = ?, updated_at = ? "
                "WHERE name = ? AND state = 'HALF_OPEN' AND probe_holder = ?",
                (now, retry_at, error, now, name, holder),
            )
            return cursor.rowcount == 1

        result: bool = self._write(reopen)
        return result
