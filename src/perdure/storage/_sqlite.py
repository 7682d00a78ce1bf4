"""The embedded store: one SQLite file, in WAL mode, on the standard ``sqlite3`` module.

All writes of a process go through one connection in one writer thread, which
groups concurrent writes into one transaction (see ``_batch``). Reads use one
connection per thread; WAL lets them run while the writer commits. Several
processes may share the file: SQLite serialises their writers with a busy
timeout. The operations whose SQL PostgreSQL shares are in ``_sql``; here are how
to reach the file, and the operations that rely on SQLite's one writer at a time
instead of row locks.

Durability: ``synchronous=FULL`` by default, so a committed step survives a
power loss. ``?synchronous=normal`` in the URL trades that (a power loss, not a
process crash, may lose the last commits) for much cheaper commits.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from .._errors import ConfigurationError
from .._text import redact_url
from ._base import Lease, StepRecord, WorkflowRecord
from ._batch import GroupCommitter, Write
from ._dialect import SQLITE
from ._limits import check_key, check_topic
from ._queries import (
    WF_COLUMNS,
    check_versions,
    claim_candidates,
    migrations,
    parked_on,
    workflow_record,
)
from ._sql import outcome_params, step_params
from ._sql_transact import SqlTransactions
from ._sqlite_errors import CommitInDoubt, cannot_open, in_doubt, translate
from ._statements import COMPLETE_WORKFLOW, INSERT_STEP

T = TypeVar("T")

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
_INSERT_STEP = SQLITE.sql(INSERT_STEP)
_COMPLETE = SQLITE.sql(COMPLETE_WORKFLOW)


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


class _Transaction:
    """``with _Transaction(conn):`` the block in one IMMEDIATE transaction, committed at
    its end, rolled back if it raises. A class, not a generator: it wraps every batch,
    and ``contextlib.contextmanager`` costs several Python calls more each time."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        # IMMEDIATE takes the write lock up front, so a busy database makes us wait at
        # BEGIN (within busy_timeout) instead of failing half-way through.
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        conn = self.conn
        if kind is not None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return  # the block's exception goes on
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                # Still open (busy): nothing was committed. Roll back, since a writer
                # connection left inside a transaction could never write again.
                conn.execute("ROLLBACK")
                raise
            # SQLite ended the transaction itself (an I/O error while committing): the
            # writes may be in the -wal file all the same, so the outcome is not known.
            raise CommitInDoubt(exc) from exc


class _Alone:
    """``with _Alone(conn):`` a lone one-statement write (``GroupCommitter``'s ``alone``)
    in autocommit: SQLite makes the statement its own transaction, taking the write lock
    at its start as BEGIN IMMEDIATE would, with the same durability; BEGIN and COMMIT
    cost two statements more. Its commit happens inside the statement, so a failure that
    may have come from writing the -wal file there is in doubt, as at a COMMIT."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if not isinstance(exc, sqlite3.Error):
            return
        if self.conn.in_transaction:  # not expected of one statement: never leave one open
            self.conn.execute("ROLLBACK")
        if in_doubt(exc):
            raise CommitInDoubt(exc) from exc


_CANDIDATES = claim_candidates(
    ":%s", "(SELECT value FROM json_each(:names))", "(SELECT value FROM json_each(:dead))", True
)
# One writer at a time holds the SQLite write lock, so select-then-update inside this
# transaction is atomic without row locks.
_CLAIM = SQLITE.sql(
    "UPDATE perdure_workflows SET owner = :me, epoch = epoch + 1, status = {RUNNING}, "
    "lease_expires_at = :lease, note = NULL, updated_at = :now, "
    "recoveries = recoveries + (status = {RUNNING} AND wake_at IS NULL), "
    "wake_at = NULL, wait_topic = NULL, held_code = NULL, held_detail = NULL "
    "WHERE id IN (SELECT id FROM perdure_workflows WHERE id IN ("
    + _CANDIDATES.replace("{", "{{").replace("}", "}}")
    + ") ORDER BY created_at LIMIT :limit) "
    f"RETURNING {WF_COLUMNS}"
)
# One writer at a time: a message sent (or a breaker closed) before this statement is
# seen by it, one sent after it finds the workflow suspended and wakes it.
_SUSPEND = SQLITE.sql(
    "UPDATE perdure_workflows SET owner = NULL, lease_expires_at = NULL, "
    "wait_topic = :topic, updated_at = :now, "
    # Asked to cancel while it ran (the cancel woke nothing: it was not suspended yet):
    # it wakes at once to be told, instead of sleeping through the request; unless it
    # was told already (it waits in its cleanup).
    "wake_at = CASE WHEN cancel_requested_at IS NOT NULL AND NOT :delivered THEN :now "
    "WHEN :topic IS NOT NULL AND EXISTS (SELECT 1 FROM "
    "perdure_messages WHERE workflow_id = :id AND topic = :topic "
    "AND consumed_at IS NULL) THEN :now "
    "WHEN EXISTS (SELECT 1 FROM perdure_breakers WHERE name = :breaker "
    "AND state = {CLOSED}) THEN :now ELSE :wake END "
    "WHERE id = :id AND (owner = :owner AND epoch = :epoch AND status = {RUNNING}) IS TRUE"
)
# Whether migrate() has set this file up (the table of schema versions is its first).
_HAS_SCHEMA = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'perdure_schema'"
_SET_EVENT = SQLITE.sql(
    "INSERT INTO perdure_events (workflow_id, key, value, updated_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (workflow_id, key) DO UPDATE SET "
    "value = excluded.value, updated_at = excluded.updated_at"
)


class SQLiteStore(SqlTransactions):
    """A ``Store`` in one SQLite file. URL: ``sqlite:///relative/path.db`` or
    ``sqlite:////absolute/path.db``, options ``?synchronous=full|normal`` and
    ``&busy_timeout=<ms>``."""

    kind = "sqlite"
    _dialect = SQLITE

    def __init__(self, url: str, *, create: bool = True) -> None:
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
        if not create:
            # Before any connection of ours: connecting creates a missing file, and
            # turns an existing one to WAL mode.
            self._require_existing(url)
        self._local = threading.local()
        # Every reader connection, so that close() can close them from any thread.
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: GroupCommitter[sqlite3.Connection] = GroupCommitter(
            self._connect,
            _Transaction,
            self._translate,
            name=f"perdure-sqlite-writer:{self.path}",
            alone=_Alone,
        )
        # New workflows too: SQLite lets one connection write at a time, a second one would
        # only wait for the first's lock.
        self._starter = self._writer

    def _require_existing(self, url: str) -> None:
        """Refuse (``ConfigurationError``) a file that is missing or holds no perdure
        schema, looking through a read-only connection that changes nothing."""
        if not self.path.is_file():
            raise ConfigurationError(
                f"no database at {redact_url(url)} (no file {str(self.path.absolute())!r}); "
                "nothing was created"
            )
        try:
            uri = f"{self.path.absolute().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
                found = conn.execute(_HAS_SCHEMA).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        if not found:
            raise ConfigurationError(
                f"no perdure schema in the SQLite database {str(self.path)!r} (it has no "
                "perdure tables: another application's file?); nothing was created"
            )

    def _translate(self, exc: Exception) -> Exception:
        error = translate(exc, self.path, self._busy_timeout)
        if error is not exc:
            error.__cause__ = exc
        return error

    def _connect(self) -> sqlite3.Connection:
        if not self.path.parent.is_dir():
            raise ConfigurationError(
                f"cannot open the SQLite database {str(self.path)!r}: {cannot_open(self.path)}"
            )
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout:d}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._connect()
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise self._translate(exc) from exc

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._writer.submit(fn).result()

    # -- transactional steps (see _sql_transact) -----------------------------------------

    @contextlib.contextmanager
    def _own_transaction(self) -> Iterator[sqlite3.Connection]:
        # A new connection: the user's function may leave anything behind on it. SQLite
        # has one writer at a time: meanwhile the writer thread's commits wait for it.
        conn = self._connect()
        try:
            with _Transaction(conn):
                yield conn
        finally:
            conn.close()

    def _lost_race(self, exc: BaseException) -> bool:
        text = str(exc).lower()
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)

    def _translate_error(self, exc: Exception) -> Exception:
        return self._translate(exc)

    def _still_open(self, conn: sqlite3.Connection) -> bool:
        return conn.in_transaction

    # -- lifecycle -------------------------------------------------------------------

    def migrate(self) -> None:
        shipped = migrations("sqlite")
        if self._migrated(shipped, repr(str(self.path))):
            return

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE IF NOT EXISTS perdure_schema (version INTEGER NOT NULL)")
            applied = {row[0] for row in conn.execute("SELECT version FROM perdure_schema")}
            check_versions(applied, shipped, repr(str(self.path)))
            # Every migration not applied yet, also one numbered below the newest applied
            # (migrations developed side by side may land in either order).
            for version, script in shipped:
                if version not in applied:
                    for statement in split_statements(script):
                        conn.execute(statement)
                    conn.execute("INSERT INTO perdure_schema (version) VALUES (?)", (version,))

        self._write(apply)

    def _compact(self) -> None:
        # After an erasure: an UPDATE leaves the old bytes of a value in the page's free
        # space, in freed pages and in the WAL's older frames. VACUUM rewrites the file
        # without them; the TRUNCATE checkpoint then empties the WAL.
        try:
            with contextlib.closing(self._connect()) as conn:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def exists(self) -> bool:
        return bool(self._read(_HAS_SCHEMA))

    def close(self) -> None:
        self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(Exception):
                    conn.close()
            self._readers.clear()
        self._local = threading.local()

    # -- what relies on SQLite's one writer at a time ------------------------------------

    def _step_write(self, workflow_id: str, lease: Lease, step: StepRecord) -> Write:
        params = step_params(workflow_id, lease, step)
        return Write(lambda conn: conn.execute(_INSERT_STEP, params).rowcount == 1, single=True)

    def _completion(
        self,
        workflow_id: str,
        lease: Lease,
        status: str,
        output: str | None,
        error: str | None,
        now: float,
        parent_id: str | None,
    ) -> Write:
        if parent_id is not None:
            return super()._completion(workflow_id, lease, status, output, error, now, parent_id)
        # No parent to tell, and this store pushes no events: one statement, whose row
        # count SQLite knows at once (the shared version reads it after the commit, for
        # PostgreSQL's pipeline).
        params = outcome_params(workflow_id, lease, status, output, error, now)
        return Write(
            lambda conn: conn.execute(_COMPLETE, params).rowcount == 1,
            what=f"recording the outcome of workflow {workflow_id!r}",
            single=True,
        )

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
        params = {
            "me": executor_id,
            "lease": lease_expires_at,
            "now": now,
            "version": app_version,
            "names": json.dumps(list(names)),
            "dead": json.dumps(list(dead_owners)),
            "limit": limit,
        }

        def claim(conn: sqlite3.Connection) -> list[WorkflowRecord]:
            rows = conn.execute(_CLAIM, params).fetchall()
            return sorted((workflow_record(row) for row in rows), key=lambda r: r.created_at)

        return self._write(claim)

    def suspend_workflow(
        self,
        workflow_id: str,
        lease: Lease,
        wake_at: float,
        wait_topic: str | None,
        now: float,
        cancel_delivered: bool = False,
    ) -> Future[bool]:
        check_topic("wait topic", wait_topic)
        params = {
            "id": workflow_id,
            "owner": lease.owner,
            "epoch": lease.epoch,
            "topic": wait_topic,
            "wake": wake_at,
            "now": now,
            "delivered": cancel_delivered,
            "breaker": parked_on(wait_topic),
        }
        return self._writer.submit(
            lambda conn: conn.execute(_SUSPEND, params).rowcount == 1,
            f"suspending workflow {workflow_id!r}",
        )

    def set_event(self, workflow_id: str, lease: Lease, step: StepRecord, key: str) -> Future[bool]:
        check_key("event key", key)
        params = step_params(workflow_id, lease, step)
        event = (workflow_id, key, step.output, step.updated_at)

        def write(conn: sqlite3.Connection) -> bool:
            if conn.execute(_INSERT_STEP, params).rowcount != 1:
                return False
            conn.execute(_SET_EVENT, event)
            return True

        return self._writer.submit(write, f"setting event {key!r} of workflow {workflow_id!r}")
