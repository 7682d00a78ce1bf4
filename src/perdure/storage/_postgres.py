"""The server store: PostgreSQL through psycopg 3, for many executors on many hosts.

The hot-path writes of a process (creating a workflow, recording a step, completing
a workflow) go through one dedicated connection in one writer thread, which groups
concurrent writes into one transaction (see ``_batch``): one commit, one WAL flush,
for everything that arrived while the previous one committed. The transaction is
pipelined: a batch of step records costs one round trip, not one per statement.
Reads and the other writes (claims, heartbeats, notes, migrations) borrow a
connection from a ``psycopg_pool.ConnectionPool``.

Every object lives in one schema (``?schema=``, default ``perdure``), selected with
``SET search_path`` on each connection, so that several apps or test runs can share
a database. Claims lock rows with ``FOR UPDATE SKIP LOCKED``, so executors on many
hosts never claim the same workflow and never wait for each other.

If the writer's connection dies (a server restart, a network cut), the writes of
that batch fail with ``StoreUnavailableError`` and the next batch reconnects; one
that the server closed while the writer was idle is replaced before the next batch,
which then does not fail. No
psycopg exception leaves this module: ``OperationalError`` (the server cannot be
reached, or gave up on the statement) becomes ``StoreUnavailableError``, every other
``psycopg.Error`` becomes ``StoreError``, each chained to the original.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from .._errors import ConfigurationError, StoreError, StoreUnavailableError
from ._base import (
    BREAKER_TOPIC,
    CHILD_TOPIC,
    EVENT_CANCEL,
    EVENT_DONE,
    EVENT_EVENT,
    EVENT_READY,
    EVENT_WAKE,
    BreakerRecord,
    ExecutorRecord,
    Lease,
    NewWorkflow,
    StepRecord,
    Store,
    WorkflowRecord,
)
from ._batch import GroupCommitter
from ._pg_listener import Listener, channel_name
from ._pg_session import (
    Connection,
    alive,
    batch_transaction,
    broken,
    end_expired_sessions,
    first_line,
    session_tag,
    translate,
)
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

T = TypeVar("T")
log = logging.getLogger("perdure")


#: A schema name as an unquoted lower-case identifier: what ``?schema=`` accepts.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_SCHEMA = "perdure"
#: Key of the transaction-level advisory lock that serialises migrations database-wide
#: (the bytes of "perdure" read as an integer).
MIGRATION_LOCK = 0x70657264757265
DEFAULT_POOL_MIN = 1
DEFAULT_POOL_MAX = 10
#: Seconds to wait for a server that does not answer, when the URL does not say.
DEFAULT_CONNECT_TIMEOUT = 10
#: How many more times a heartbeat tries to renew rows that other writes held locked.
_RENEW_RETRIES = 5
#: Seconds a read or a pooled write waits for a connection before giving up.
POOL_TIMEOUT = 15.0
#: A process frozen inside a transaction (SIGSTOP, a VM pause) would hold its row locks,
#: and claims skip locked rows: let the server end such a session instead.
_IDLE_IN_TRANSACTION = "SET idle_in_transaction_session_timeout = '10s'"
_SET_APPLICATION_NAME = "SELECT set_config('application_name', %s, false)"
APPLICATION_NAME = "perdure"
WRITER_APPLICATION_NAME = "perdure-writer"


# Record a step. The fencing check and the write are one statement: no read before it. The
# check locks the workflow's row FOR KEY SHARE: a claim holds it FOR UPDATE, so a step
# racing a takeover waits for the claim to commit and is then checked against the new
# owner and epoch (a plain read would check the row as it was when the statement began,
# and record a stale step after the claim). Heartbeats and completions take weaker locks
# that do not conflict with it. The casts type the parameters (a None would otherwise be
# read as text).
_INSERT_STEP = (
    "INSERT INTO perdure_steps (workflow_id, position, name, status, output, "
    "error, attempts, next_attempt_at, updated_at) "
    "SELECT %s::text, %s::text, %s::text, %s::text, %s::text, %s::text, "
    "%s::integer, %s::double precision, %s::double precision "
    "WHERE EXISTS (SELECT 1 FROM perdure_workflows "
    "WHERE id = %s AND owner = %s AND epoch = %s AND status = 'RUNNING' "
    "FOR KEY SHARE) "
    "ON CONFLICT (workflow_id, position) DO UPDATE SET status = excluded.status, "
    "output = excluded.output, error = excluded.error, "
    "attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, "
    "updated_at = excluded.updated_at "
    "WHERE perdure_steps.status IN ('RETRYING', 'WAITING')"
)


def _step_params(workflow_id: str, lease: Lease, step: StepRecord) -> tuple[Any, ...]:
    return (
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
    )


# The candidates' conditions are checked again by the claim itself once their rows are
# locked: a row may have changed since the candidates were read.
_CANDIDATES = claim_candidates(
    "%%(%s)s", "(SELECT unnest(%(names)s::text[]))", "(SELECT unnest(%(dead)s::text[]))", False
)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(Store):
    """A ``Store`` in a PostgreSQL database. URL: ``postgresql://user:password@host:port/db``
    (or ``postgres://``), options ``?schema=<name>`` (default ``perdure``), ``&pool_min=``
    and ``&pool_max=`` (the read pool's size); any other option goes to libpq (such as
    ``sslmode``, ``connect_timeout``, ``application_name``)."""

    kind = "postgresql"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"not a PostgreSQL URL: {_redact(url)!r} (expected postgresql://user@host/db)"
            )
        options: dict[str, str] = {}
        libpq: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in ("schema", "pool_min", "pool_max"):
                options[key] = value
            else:
                libpq.append((key, value))
        schema = options.get("schema", DEFAULT_SCHEMA)
        if not SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(
                f"schema={schema!r} in {_redact(url)!r}: use a lower-case identifier "
                "(letters, digits and _, not starting with a digit, at most 63 characters)"
            )
        pool_min = self._size(options, "pool_min", DEFAULT_POOL_MIN, url)
        pool_max = self._size(options, "pool_max", DEFAULT_POOL_MAX, url)
        if pool_max < 1 or pool_min > pool_max:
            raise ConfigurationError(
                f"pool_min={pool_min} and pool_max={pool_max} in {_redact(url)!r}: "
                "need 0 <= pool_min <= pool_max and pool_max >= 1"
            )
        base = urlunsplit(parts._replace(query=urlencode(libpq)))
        try:
            given = conninfo_to_dict(base)
        except psycopg.Error as exc:
            raise ConfigurationError(
                f"bad PostgreSQL URL {_redact(url)!r}: {first_line(exc)}"
            ) from exc
        defaults: dict[str, Any] = {}
        if "connect_timeout" not in given:
            defaults["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        application_name = str(given.get("application_name") or APPLICATION_NAME)
        self.schema = schema
        self.pool_min = pool_min
        self.pool_max = pool_max
        self._conninfo = make_conninfo(base, application_name=application_name, **defaults)
        self._writer_name = (
            WRITER_APPLICATION_NAME
            if application_name == APPLICATION_NAME
            else f"{application_name}-writer"[:63]
        )
        self._search_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))
        self._channel = channel_name(schema)
        self._listener = Listener(self._conninfo, self._channel, f"{self._writer_name}-listen"[:63])
        self._closed = False
        # The executor this store's sessions serve (see session_tag), once one registered.
        self._tag = ""
        self._reap_denied = False
        self._writer: GroupCommitter[Connection] = GroupCommitter(
            self._connect_writer,
            batch_transaction,
            translate,
            name=f"perdure-postgres-writer:{schema}",
            broken=broken,
            alive=alive,
        )
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            self._conninfo,
            min_size=pool_min,
            max_size=pool_max,
            kwargs={"autocommit": True},
            configure=self._configure,
            timeout=POOL_TIMEOUT,
            name=f"perdure-postgres-pool:{schema}",
            open=False,
        )
        try:
            # Connections are made in the background: the writer has already shown that
            # the server answers.
            self._pool.open(wait=False)
        except Exception:
            self._writer.close()
            raise

    @staticmethod
    def _size(options: dict[str, str], key: str, default: int, url: str) -> int:
        try:
            return int(options.get(key, default))
        except ValueError as exc:
            raise ConfigurationError(f"{key} in {_redact(url)!r} must be an integer") from exc

    # -- connections -------------------------------------------------------------------

    def _configure(self, conn: Connection) -> None:
        conn.execute(self._search_path)
        conn.execute(_IDLE_IN_TRANSACTION)
        if self._tag:
            conn.execute(_SET_APPLICATION_NAME, (self._tag,))

    def _connect_writer(self) -> Connection:
        # Autocommit, because _transaction sends BEGIN and COMMIT itself (see there).
        conn = psycopg.connect(self._conninfo, autocommit=True, application_name=self._writer_name)
        try:
            conn.execute(self._search_path)
            conn.execute(_IDLE_IN_TRANSACTION)
            if self._tag:
                conn.execute(_SET_APPLICATION_NAME, (self._tag,))
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A pooled connection that is still alive. A connection the server closed while
        it sat in the pool (a restart, a terminated session) is found by a local check,
        without the round trip that the pool's own check would cost on every read."""
        for _ in range(self.pool_max + 1):
            with self._pool.connection() as conn:
                if not alive(conn):
                    conn.close()  # the pool drops a closed connection
                    continue
                yield conn
                return
        raise StoreUnavailableError("no live connection to PostgreSQL in the pool")

    def _read(self, query: sql.Composed | str, params: Sequence[Any] = ()) -> list[Any]:
        for attempt in (1, 2):
            try:
                with self._connection() as conn:
                    return conn.execute(query, params).fetchall()
            except psycopg.OperationalError as exc:
                # A connection that died just before (its farewell not read yet): a read
                # is safe to repeat on a fresh one; a second failure is the server's.
                if attempt == 2:
                    raise translate(exc) from exc
            except psycopg.Error as exc:
                raise translate(exc) from exc
        raise AssertionError("unreachable")

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction on a pooled connection (not group-committed)."""
        try:
            with self._connection() as conn, conn.transaction():
                return fn(conn)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    # -- lifecycle -------------------------------------------------------------------

    def migrate(self) -> None:
        def apply(conn: Connection) -> None:
            # Many workers may start at once: the first to take the lock migrates, the
            # others then find the schema at the newest version. It is released at commit.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            # Create the schema only when missing: CREATE SCHEMA needs a privilege on the
            # database that a user who only owns the schema may lack.
            if not conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchall():
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            conn.execute("CREATE TABLE IF NOT EXISTS perdure_schema (version INTEGER NOT NULL)")
            # Every migration not applied yet, also one numbered below the newest applied
            # (migrations developed side by side may land in either order).
            rows = conn.execute("SELECT version FROM perdure_schema").fetchall()
            applied = {row[0] for row in rows}
            for version, script in migrations("postgres"):
                if version not in applied:
                    # Without parameters, psycopg sends the script as one simple query:
                    # every statement runs, inside this transaction.
                    conn.execute(script.encode("utf-8"))
                    conn.execute("INSERT INTO perdure_schema (version) VALUES (%s)", (version,))

        self._write(apply)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener.close()
        self._writer.close()
        self._pool.close()

    def listen(self, on_event: Callable[[str], None]) -> bool:
        self._listener.add(on_event)
        return True

    def _notify(self, conn: Connection, event: str) -> None:
        # Delivered at commit, to listeners on every host; pipelined with the write.
        conn.execute("SELECT pg_notify(%s, %s)", (self._channel, event))

    # -- workflows -------------------------------------------------------------------

    def create_workflow(
        self, new: NewWorkflow, owner: str | None, lease_expires_at: float | None
    ) -> Future[tuple[WorkflowRecord, bool]]:
        status, epoch = ("RUNNING", 1) if owner else ("PENDING", 0)

        def insert(conn: Connection) -> tuple[WorkflowRecord, bool]:
            row = conn.execute(
                "INSERT INTO perdure_workflows (id, name, status, inputs, serializer, "
                "app_version, owner, epoch, lease_expires_at, created_at, updated_at, "
                "parent_id, deadline_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING RETURNING " + WF_COLUMNS,
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
                if owner is None:
                    self._notify(conn, EVENT_READY)
                return WorkflowRecord(*row), True
            # A new statement sees the conflicting row, which ON CONFLICT waited for.
            row = conn.execute(
                "SELECT " + WF_COLUMNS + " FROM perdure_workflows WHERE id = %s", (new.id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"workflow {new.id!r} conflicted on insert but is not stored")
            return WorkflowRecord(*row), False

        return self._writer.submit(insert)

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        rows = self._read(
            "SELECT " + WF_COLUMNS + " FROM perdure_workflows WHERE id = %s", (workflow_id,)
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
        query, params = list_query(
            "%s", status, name, created_after, created_before, limit, newest_first
        )
        rows = self._read(query, params)
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
        def update(conn: Connection) -> Callable[[], bool]:
            cursor = conn.execute(
                "UPDATE perdure_workflows SET status = %s, output = %s, error = %s, "
                "owner = NULL, lease_expires_at = NULL, note = NULL, updated_at = %s, "
                "finished_at = %s WHERE id = %s AND owner = %s AND epoch = %s "
                "AND status IN ('PENDING', 'RUNNING')",
                (status, output, error, now, now, workflow_id, lease.owner, lease.epoch),
            )
            if parent_id is not None:
                self._deliver_outcome(conn, workflow_id, parent_id, now)
            self._notify(conn, EVENT_DONE + workflow_id)
            return lambda: cursor.rowcount == 1

        return self._writer.submit_deferred(update)

    def _deliver_outcome(self, conn: Connection, child_id: str, parent_id: str, now: float) -> None:
        # Pipelined behind the completion, so it cannot branch on it: the message is built
        # from the child's row as this transaction sees it, only once the child has its
        # outcome; the key makes it at most once (a completion that lost the race found an
        # outcome whose own transaction delivered it).
        topic = CHILD_TOPIC + child_id
        conn.execute(
            "INSERT INTO perdure_messages (workflow_id, topic, payload, idempotency_key, "
            "created_at) SELECT %s, %s, json_build_array(status, output, error)::text, %s, %s "
            "FROM perdure_workflows WHERE id = %s AND status IN ('SUCCEEDED', 'FAILED', "
            "'CANCELLED') ON CONFLICT (workflow_id, idempotency_key) DO NOTHING",
            (parent_id, topic, topic, now, child_id),
        )
        self._wake_for_message(conn, parent_id, topic, now)
        self._notify(conn, EVENT_READY)

    @staticmethod
    def _wake_for_message(conn: Connection, workflow_id: str, topic: str, now: float) -> Any:
        # Always lock the workflow's row (see suspend_workflow): it wakes the workflow if it
        # is suspended on this topic, now or once a suspension in flight commits.
        return conn.execute(
            "UPDATE perdure_workflows SET wake_at = CASE WHEN owner IS NULL "
            "AND wait_topic = %s AND wake_at > %s THEN %s ELSE wake_at END "
            "WHERE id = %s RETURNING owner IS NULL AND wake_at = %s",
            (topic, now, now, workflow_id, now),
        )

    def set_note(self, workflow_id: str, note: str | None, now: float) -> None:
        self._write(
            lambda conn: conn.execute(
                "UPDATE perdure_workflows SET note = %s, updated_at = %s WHERE id = %s",
                (note, now, workflow_id),
            )
        )

    # -- steps -----------------------------------------------------------------------

    def load_steps(self, workflow_id: str) -> list[StepRecord]:
        rows = self._read(
            "SELECT " + STEP_COLUMNS + " FROM perdure_steps WHERE workflow_id = %s ORDER BY seq",
            (workflow_id,),
        )
        return [StepRecord(*row) for row in rows]

    def record_step(self, workflow_id: str, lease: Lease, step: StepRecord) -> Future[bool]:
        def upsert(conn: Connection) -> Callable[[], bool]:
            cursor = conn.execute(_INSERT_STEP, _step_params(workflow_id, lease, step))
            return lambda: cursor.rowcount == 1

        return self._writer.submit_deferred(upsert)

    # -- executors and leases ----------------------------------------------------------

    def register_executor(self, executor: ExecutorRecord) -> None:
        # Name this process's sessions after the executor, so that others can end them if
        # it stops renewing its lease while frozen inside a transaction (see _reap).
        self._tag = session_tag(executor.id)
        self._writer.submit(lambda conn: conn.execute(_SET_APPLICATION_NAME, (self._tag,))).result()
        self._pool.drain()
        self._write(
            lambda conn: conn.execute(
                "INSERT INTO perdure_executors (" + EXECUTOR_COLUMNS + ") "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "host = excluded.host, pid = excluded.pid, app_version = excluded.app_version, "
                "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
                "lease_expires_at = excluded.lease_expires_at, stopped_at = excluded.stopped_at",
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
        def renew(conn: Connection, pending: list[str] | None) -> tuple[set[str], set[str]]:
            if pending is None:
                conn.execute(
                    "UPDATE perdure_executors SET heartbeat_at = %s, lease_expires_at = %s "
                    "WHERE id = %s",
                    (now, lease_expires_at, executor_id),
                )
            # SKIP LOCKED: a row locked by another write (a completion in the writer's open
            # batch, a message or a child's outcome waking it, a claim) is left alone,
            # instead of waiting for it while holding the rows renewed so far, which
            # deadlocks with a batch that locks two of them in the other order. Step writes
            # take a KEY SHARE lock, which does not conflict: busy workflows are renewed.
            rows = conn.execute(
                "UPDATE perdure_workflows SET lease_expires_at = %s "
                "WHERE id IN (SELECT id FROM perdure_workflows "
                "WHERE owner = %s AND status IN ('PENDING', 'RUNNING') "
                "AND (%s::text[] IS NULL OR id = ANY(%s::text[])) "
                "FOR NO KEY UPDATE SKIP LOCKED) RETURNING id",
                (lease_expires_at, executor_id, pending, pending),
            ).fetchall()
            # What the store says we own, as committed: a skipped row is still ours (its
            # write will commit or fail on its own); one taken over is not.
            owned = conn.execute(
                "SELECT id FROM perdure_workflows WHERE owner = %s "
                "AND status IN ('PENDING', 'RUNNING')",
                (executor_id,),
            ).fetchall()
            return {row[0] for row in rows}, {row[0] for row in owned}

        renewed, owned = self._write(lambda conn: renew(conn, None))
        # Rows skipped because a write held them at that instant: try them again shortly,
        # so that a workflow whose row is often locked (a parent whose many children keep
        # delivering outcomes) does not let its lease lapse.
        for _ in range(_RENEW_RETRIES):
            skipped = sorted(owned - renewed)
            if not skipped:
                break
            time.sleep(0.01)
            more, owned = self._write(lambda conn, ids=skipped: renew(conn, ids))  # type: ignore[misc]
            renewed |= more
        return owned

    def list_executors(self) -> list[ExecutorRecord]:
        rows = self._read(
            "SELECT " + EXECUTOR_COLUMNS + " FROM perdure_executors WHERE stopped_at IS NULL"
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
        def claim(conn: Connection) -> list[WorkflowRecord]:
            self._reap(conn, executor_id, now)
            # SKIP LOCKED: rows another executor is claiming (or a writer is completing)
            # right now are left to it, so concurrent claims never overlap or wait. A row
            # updated since the snapshot is re-checked against the conditions when locked.
            rows = conn.execute(
                "UPDATE perdure_workflows SET owner = %(me)s, epoch = epoch + 1, "
                "status = 'RUNNING', lease_expires_at = %(lease)s, note = NULL, "
                "updated_at = %(now)s, "
                "recoveries = recoveries + CASE WHEN status = 'RUNNING' AND wake_at IS NULL "
                "THEN 1 ELSE 0 END, wake_at = NULL, wait_topic = NULL "
                "WHERE id IN (SELECT id FROM perdure_workflows WHERE id IN ("
                + _CANDIDATES
                + ") AND status IN ('PENDING', 'RUNNING') "
                "AND (owner IS NULL OR lease_expires_at < %(now)s "
                "OR owner = ANY(%(dead)s::text[])) "
                "AND (wake_at IS NULL OR wake_at <= %(now)s) "
                "ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
                "RETURNING " + WF_COLUMNS,
                {
                    "me": executor_id,
                    "lease": lease_expires_at,
                    "now": now,
                    "version": app_version,
                    "names": list(names),
                    "dead": list(dead_owners),
                    "limit": limit,
                },
            ).fetchall()
            return sorted((WorkflowRecord(*row) for row in rows), key=lambda r: r.created_at)

        return self._write(claim)

    def _reap(self, conn: Connection, executor_id: str, now: float) -> None:
        if self._reap_denied:
            return
        try:
            end_expired_sessions(conn, executor_id, now)
        except psycopg.errors.InsufficientPrivilege as exc:
            # Workers under different roles: then locks of a frozen worker are released
            # only when it resumes or its connection dies.
            self._reap_denied = True
            log.warning("cannot end sessions of expired executors (%s)", first_line(exc))

    def unclaimable_workflows(
        self, names: Sequence[str], app_version: str, now: float, limit: int = 100
    ) -> list[WorkflowRecord]:
        rows = self._read(
            "SELECT " + WF_COLUMNS + " FROM perdure_workflows "
            "WHERE status IN ('PENDING', 'RUNNING') AND (owner IS NULL OR lease_expires_at < %s) "
            "AND (wake_at IS NULL OR wake_at <= %s) "
            "AND (app_version <> %s OR NOT (name = ANY(%s::text[]))) "
            "ORDER BY created_at LIMIT %s",
            (now, now, app_version, list(names), limit),
        )
        return [WorkflowRecord(*row) for row in rows]

    def owned_workflows(self, executor_id: str) -> list[str]:
        rows = self._read(
            "SELECT id FROM perdure_workflows "
            "WHERE owner = %s AND status IN ('PENDING', 'RUNNING')",
            (executor_id,),
        )
        return [row[0] for row in rows]

    def release_workflows(self, executor_id: str, now: float) -> int:
        def release(conn: Connection) -> int:
            cursor = conn.execute(
                "UPDATE perdure_workflows SET owner = NULL, lease_expires_at = NULL, "
                "updated_at = %s WHERE owner = %s AND status IN ('PENDING', 'RUNNING')",
                (now, executor_id),
            )
            conn.execute(
                "UPDATE perdure_executors SET stopped_at = %s WHERE id = %s", (now, executor_id)
            )
            if cursor.rowcount:
                self._notify(conn, EVENT_READY)
            return cursor.rowcount

        return self._write(release)

    # -- waiting: timers, suspension, messages, events -----------------------------------

    def suspend_workflow(
        self, workflow_id: str, lease: Lease, wake_at: float, wait_topic: str | None, now: float
    ) -> Future[bool]:
        def suspend(conn: Connection) -> bool:
            row = conn.execute(
                "UPDATE perdure_workflows SET owner = NULL, lease_expires_at = NULL, "
                "wake_at = %s, wait_topic = %s, updated_at = %s "
                "WHERE id = %s AND owner = %s AND epoch = %s AND status = 'RUNNING' "
                "RETURNING id",
                (wake_at, wait_topic, now, workflow_id, lease.owner, lease.epoch),
            ).fetchone()
            if row is None:
                return False
            if wait_topic is not None:
                # A new statement, so a new snapshot: it sees every message whose sender
                # updated the workflow's row before our update locked it (the sender waited
                # for nothing and committed first). A sender that comes after our lock waits
                # for our commit and then wakes the suspended workflow itself.
                conn.execute(
                    "UPDATE perdure_workflows SET wake_at = %s WHERE id = %s "
                    "AND EXISTS (SELECT 1 FROM perdure_messages WHERE workflow_id = %s "
                    "AND topic = %s AND consumed_at IS NULL)",
                    (now, workflow_id, workflow_id, wait_topic),
                )
            breaker = parked_on(wait_topic)
            if breaker is not None:
                # Parked on a breaker: lock its row (whatever its state), so that a close
                # either commits before this read (we see CLOSED and wake at once) or waits
                # for our commit (and its wake-all then sees this workflow suspended).
                state = conn.execute(
                    "SELECT state FROM perdure_breakers WHERE name = %s FOR SHARE", (breaker,)
                ).fetchone()
                if state is not None and state[0] == "CLOSED":
                    conn.execute(
                        "UPDATE perdure_workflows SET wake_at = %s WHERE id = %s",
                        (now, workflow_id),
                    )
            self._notify(conn, EVENT_WAKE)
            return True

        return self._writer.submit(suspend)

    def next_wake_at(self, after: float) -> float | None:
        rows = self._read("SELECT min(wake_at) FROM perdure_workflows WHERE wake_at > %s", (after,))
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
        def send(conn: Connection) -> bool | None:
            inserted = conn.execute(
                "INSERT INTO perdure_messages (workflow_id, topic, payload, idempotency_key, "
                "created_at) SELECT %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM "
                "perdure_workflows WHERE id = %s AND status IN ('PENDING', 'RUNNING')) "
                "ON CONFLICT (workflow_id, idempotency_key) DO NOTHING RETURNING seq",
                (workflow_id, topic, payload, idempotency_key, now, workflow_id),
            ).fetchone()
            if inserted is None:
                # Not stored: a repeated key (also once the workflow finished), or no
                # active workflow to receive it.
                row = conn.execute(
                    WHY_NOT_STORED, (workflow_id, idempotency_key, workflow_id)
                ).fetchone()
                return None if row is None or not (row[0] or row[1]) else False
            woken = self._wake_for_message(conn, workflow_id, topic, now).fetchone()
            if woken is not None and woken[0]:
                self._notify(conn, EVENT_READY)
            return True

        return self._writer.submit(send)

    def consume_message(
        self, workflow_id: str, lease: Lease, topic: str, step: StepRecord, now: float
    ) -> Future[tuple[bool, str | None]]:
        def consume(conn: Connection) -> tuple[bool, str | None]:
            # The lock on the workflow's row (KEY SHARE, like a step record) holds until
            # commit: no claim can take the workflow over between the check and the writes.
            fenced = conn.execute(
                "SELECT 1 FROM perdure_workflows WHERE id = %s AND owner = %s AND epoch = %s "
                "AND status = 'RUNNING' AND NOT EXISTS (SELECT 1 FROM perdure_steps "
                "WHERE workflow_id = %s AND position = %s "
                "AND status NOT IN ('RETRYING', 'WAITING')) FOR KEY SHARE",
                (workflow_id, lease.owner, lease.epoch, workflow_id, step.position),
            ).fetchone()
            if fenced is None:
                return False, None
            row = conn.execute(
                "UPDATE perdure_messages SET consumed_at = %s WHERE seq = (SELECT seq FROM "
                "perdure_messages WHERE workflow_id = %s AND topic = %s "
                "AND consumed_at IS NULL ORDER BY seq LIMIT 1 FOR UPDATE) RETURNING payload",
                (now, workflow_id, topic),
            ).fetchone()
            if row is None:
                return True, None
            payload: str = row[0]
            recorded = StepRecord(
                step.position, step.name, step.status, payload, None, step.attempts, None, now
            )
            # In pipeline mode a row count is known only at the commit: read a returned row.
            inserted = conn.execute(
                _INSERT_STEP + " RETURNING 1", _step_params(workflow_id, lease, recorded)
            ).fetchone()
            if inserted is None:
                raise StoreError(f"could not record the message for workflow {workflow_id!r}")
            return True, payload

        return self._writer.submit(consume)

    def set_event(self, workflow_id: str, lease: Lease, step: StepRecord, key: str) -> Future[bool]:
        def write(conn: Connection) -> bool:
            # One statement: the event is written only if the step was (a data-modifying
            # CTE runs whether or not it is read).
            row = conn.execute(
                "WITH step AS (" + _INSERT_STEP + " RETURNING 1), "
                "event AS (INSERT INTO perdure_events (workflow_id, key, value, updated_at) "
                "SELECT %s::text, %s::text, %s::text, %s::double precision FROM step "
                "ON CONFLICT (workflow_id, key) DO UPDATE "
                "SET value = excluded.value, updated_at = excluded.updated_at) "
                "SELECT count(*) FROM step",
                (
                    *_step_params(workflow_id, lease, step),
                    workflow_id,
                    key,
                    step.output,
                    step.updated_at,
                ),
            ).fetchone()
            recorded = row is not None and row[0] == 1
            if recorded:
                self._notify(conn, EVENT_EVENT + workflow_id)
            return recorded

        return self._writer.submit(write)

    def get_event(self, workflow_id: str, key: str) -> str | None:
        rows = self._read(
            "SELECT value FROM perdure_events WHERE workflow_id = %s AND key = %s",
            (workflow_id, key),
        )
        return rows[0][0] if rows else None

    # -- cancellation and continue_as_new ---------------------------------------------------

    def cancel_workflow(self, workflow_id: str, now: float) -> list[str] | None:
        def cancel(conn: Connection) -> list[str] | None:
            if not conn.execute(
                "SELECT 1 FROM perdure_workflows WHERE id = %s", (workflow_id,)
            ).fetchall():
                return None
            rows = conn.execute(
                "WITH RECURSIVE tree (id) AS (SELECT %s::text UNION SELECT w.id "
                "FROM perdure_workflows w JOIN tree ON w.parent_id = tree.id) "
                "UPDATE perdure_workflows SET cancel_requested_at = %s, updated_at = %s, "
                "wake_at = CASE WHEN owner IS NULL AND wake_at IS NOT NULL THEN %s "
                "ELSE wake_at END "
                "WHERE id IN (SELECT id FROM tree) AND status IN ('PENDING', 'RUNNING') "
                "AND cancel_requested_at IS NULL RETURNING id",
                (workflow_id, now, now, now),
            ).fetchall()
            if rows:
                self._notify(conn, EVENT_CANCEL)
                self._notify(conn, EVENT_READY)
            return [row[0] for row in rows]

        return self._write(cancel)

    def cancel_requests(self, executor_id: str) -> list[str]:
        rows = self._read(
            "SELECT id FROM perdure_workflows WHERE owner = %s "
            "AND cancel_requested_at IS NOT NULL AND status IN ('PENDING', 'RUNNING')",
            (executor_id,),
        )
        return [row[0] for row in rows]

    def continue_workflow(
        self, workflow_id: str, lease: Lease, inputs: str, now: float
    ) -> Future[WorkflowRecord | None]:
        def restart(conn: Connection) -> WorkflowRecord | None:
            row = conn.execute(
                "UPDATE perdure_workflows SET inputs = %s, generation = generation + 1, "
                "updated_at = %s WHERE id = %s AND owner = %s AND epoch = %s "
                "AND status = 'RUNNING' RETURNING " + WF_COLUMNS,
                (inputs, now, workflow_id, lease.owner, lease.epoch),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM perdure_steps WHERE workflow_id = %s", (workflow_id,))
            return WorkflowRecord(*row)

        return self._writer.submit(restart)

    # -- circuit breakers ------------------------------------------------------------------
    # Each runs in its own short transaction on a pooled connection, not in the writer's
    # batch: a close then holds the breaker's row lock only for its own two statements.

    def get_breaker(self, name: str) -> BreakerRecord | None:
        rows = self._read(
            "SELECT " + BREAKER_COLUMNS + " FROM perdure_breakers WHERE name = %s", (name,)
        )
        return BreakerRecord(*rows[0]) if rows else None

    def list_breakers(self) -> list[BreakerRecord]:
        rows = self._read(
            "SELECT " + BREAKER_COLUMNS + ", (SELECT count(*) FROM perdure_workflows "
            "WHERE wait_topic = %s || perdure_breakers.name AND owner IS NULL "
            "AND status IN ('PENDING', 'RUNNING')) FROM perdure_breakers ORDER BY name",
            (BREAKER_TOPIC,),
        )
        return [BreakerRecord(*row) for row in rows]

    def count_breaker_failure(
        self, name: str, now: float, threshold: int, window: float, retry_at: float, error: str
    ) -> bool:
        def count(conn: Connection) -> bool:
            conn.execute(
                "INSERT INTO perdure_breakers (name, state, updated_at) "
                "VALUES (%s, 'CLOSED', %s) ON CONFLICT (name) DO NOTHING",
                (name, now),
            )
            # The update locks the row until commit: concurrent failures are counted one
            # after the other, and only the one that reaches the threshold opens it.
            row = conn.execute(
                "UPDATE perdure_breakers SET "
                "failures = CASE WHEN window_start IS NULL OR window_start + %(window)s <= %(now)s "
                "THEN 1 ELSE failures + 1 END, "
                "window_start = CASE WHEN window_start IS NULL "
                "OR window_start + %(window)s <= %(now)s THEN %(now)s ELSE window_start END, "
                "last_error = %(error)s, updated_at = %(now)s "
                "WHERE name = %(name)s AND state = 'CLOSED' RETURNING failures",
                {"name": name, "now": now, "window": window, "error": error},
            ).fetchone()
            if row is None or row[0] < threshold:
                return False
            conn.execute(
                "UPDATE perdure_breakers SET state = 'OPEN', opened_at = %s, retry_at = %s "
                "WHERE name = %s",
                (now, retry_at, name),
            )
            return True

        return self._write(count)

    def claim_breaker_probe(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        def claim(conn: Connection) -> bool:
            row = conn.execute(
                "UPDATE perdure_breakers SET state = 'HALF_OPEN', probe_holder = %(holder)s, "
                "probe_expires_at = %(expires)s, updated_at = %(now)s WHERE name = %(name)s "
                "AND ((state = 'OPEN' AND retry_at <= %(now)s) OR (state = 'HALF_OPEN' "
                "AND (probe_expires_at <= %(now)s OR probe_holder = %(holder)s))) RETURNING 1",
                {"name": name, "holder": holder, "now": now, "expires": expires_at},
            ).fetchone()
            return row is not None

        return self._write(claim)

    def close_breaker(self, name: str, now: float) -> int | None:
        def close(conn: Connection) -> int | None:
            row = conn.execute(
                "UPDATE perdure_breakers SET state = 'CLOSED', failures = 0, window_start = NULL, "
                "retry_at = NULL, probe_holder = NULL, probe_expires_at = NULL, updated_at = %s "
                "WHERE name = %s AND state <> 'CLOSED' RETURNING 1",
                (now, name),
            ).fetchone()
            if row is None:
                return None
            # SKIP LOCKED: a parked row locked by someone else now is being claimed (it is
            # due) or sent a message; waiting for it while holding the breaker's row could
            # deadlock with a batch that parks another workflow. A skipped row still wakes
            # by its own wake_at, and re-checks the breaker then.
            woken = conn.execute(
                "UPDATE perdure_workflows SET wake_at = %(now)s WHERE id IN (SELECT id "
                "FROM perdure_workflows WHERE wait_topic = %(topic)s AND owner IS NULL "
                "AND status = 'RUNNING' AND wake_at > %(now)s FOR UPDATE SKIP LOCKED)",
                {"now": now, "topic": BREAKER_TOPIC + name},
            )
            if woken.rowcount:
                self._notify(conn, EVENT_READY)
            return woken.rowcount

        return self._write(close)

    def reopen_breaker(
        self, name: str, holder: str, now: float, retry_at: float, error: str
    ) -> bool:
        def reopen(conn: Connection) -> bool:
            row = conn.execute(
                "UPDATE perdure_breakers SET state = 'OPEN', opened_at = %s, retry_at = %s, "
                "probe_holder = NULL, probe_expires_at = NULL, last_error = %s, updated_at = %s "
                "WHERE name = %s AND state = 'HALF_OPEN' AND probe_holder = %s RETURNING 1",
                (now, retry_at, error, now, name, holder),
            ).fetchone()
            return row is not None

        return self._write(reopen)
