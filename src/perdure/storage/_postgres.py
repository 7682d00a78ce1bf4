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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from .._errors import ConfigurationError, StoreUnavailableError
from .._model import BreakerState
from .._text import redact_url
from ._base import EVENT_EVENT, EVENT_WAKE, ExecutorRecord, Lease, StepRecord, WorkflowRecord
from ._batch import Write
from ._dialect import POSTGRES
from ._limits import check_key, check_topic
from ._pg_listener import Listener, channel_name
from ._pg_session import (
    Connection,
    alive,
    committer,
    end_expired_sessions,
    first_line,
    session_tag,
    transient,
    translate,
)
from ._pg_statements import (
    CLAIM,
    DEFAULT_SEARCH_PATH,
    HAS_SCHEMA,
    IDLE_IN_TRANSACTION,
    LOCK_BREAKER,
    LOCK_STREAM,
    SET_APPLICATION_NAME,
    SET_EVENT,
    SET_SEARCH_PATH,
    SUSPEND,
    WAKE,
    WAKE_IF_PENDING,
)
from ._queries import (
    check_versions,
    migrations,
    parked_on,
    workflow_record,
)
from ._sql import step_params
from ._sql_transact import SqlTransactions
from ._statements import INSERT_STEP

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
#: Seconds a read or a pooled write waits for a connection before giving up.
POOL_TIMEOUT = 15.0
APPLICATION_NAME = "perdure"
WRITER_APPLICATION_NAME = "perdure-writer"


_INSERT_STEP = POSTGRES.sql(INSERT_STEP)
# A transactional step's lost races, run again: serialization failure, deadlock.
_LOST_RACE = ("40001", "40P01")


class PostgresStore(SqlTransactions):
    """A ``Store`` in a PostgreSQL database. URL: ``postgresql://user:password@host:port/db``
    (or ``postgres://``), options ``?schema=<name>`` (default ``perdure``), ``&pool_min=``
    and ``&pool_max=`` (the read pool's size); any other option goes to libpq (such as
    ``sslmode``, ``connect_timeout``, ``application_name``)."""

    kind = "postgresql"
    _dialect = POSTGRES

    def __init__(self, url: str, *, create: bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"not a PostgreSQL URL: {redact_url(url)!r} (expected postgresql://user@host/db)"
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
                f"schema={schema!r} in {redact_url(url)!r}: use a lower-case identifier "
                "(letters, digits and _, not starting with a digit, at most 63 characters)"
            )
        pool_min = self._size(options, "pool_min", DEFAULT_POOL_MIN, url)
        pool_max = self._size(options, "pool_max", DEFAULT_POOL_MAX, url)
        if pool_max < 1 or pool_min > pool_max:
            raise ConfigurationError(
                f"pool_min={pool_min} and pool_max={pool_max} in {redact_url(url)!r}: "
                "need 0 <= pool_min <= pool_max and pool_max >= 1"
            )
        base = urlunsplit(parts._replace(query=urlencode(libpq)))
        try:
            given = conninfo_to_dict(base)
        except psycopg.Error as exc:
            raise ConfigurationError(
                f"bad PostgreSQL URL {redact_url(url)!r}: {first_line(exc)}"
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
        self._writer = committer(self._connect_writer, f"perdure-postgres-writer:{schema}")
        # New workflows commit on a session of their own: a start then waits for its own
        # commit, not behind the batch of step records in flight and then in the next one
        # (an app.start loop started 1.5x as many workflows per second). Each start still
        # waits for its commit; concurrent ones share it.
        self._starter = committer(self._connect_writer, f"perdure-postgres-starter:{schema}")
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
            self._starter.close()
            raise
        if not create:
            self._require_existing(url)

    @staticmethod
    def _size(options: dict[str, str], key: str, default: int, url: str) -> int:
        try:
            return int(options.get(key, default))
        except ValueError as exc:
            raise ConfigurationError(f"{key} in {redact_url(url)!r} must be an integer") from exc

    # -- connections -------------------------------------------------------------------

    def _configure(self, conn: Connection) -> None:
        conn.execute(self._search_path)
        conn.execute(IDLE_IN_TRANSACTION)
        if self._tag:
            conn.execute(SET_APPLICATION_NAME, (self._tag,))

    def _connect_writer(self) -> Connection:
        # Autocommit, because _transaction sends BEGIN and COMMIT itself (see there).
        conn = psycopg.connect(self._conninfo, autocommit=True, application_name=self._writer_name)
        try:
            self._configure(conn)
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

    def _read(self, query: sql.Composed | str, params: Any = ()) -> list[Any]:
        # Every pooled connection may have died at once (a server restart): a read is
        # safe to repeat, on a fresh connection, as long as the one that failed died
        # under it; a failure on a live connection is the server's answer.
        for _ in range(self.pool_max + 1):
            used: Connection | None = None
            try:
                with self._connection() as conn:
                    used = conn
                    return conn.execute(query, params).fetchall()
            except UnicodeEncodeError as exc:
                raise translate(exc) from exc
            except psycopg.Error as exc:
                died = used is not None and (used.broken or used.closed)
                if not (died and transient(exc)):
                    raise translate(exc) from exc
                last = exc
        raise translate(last) from last

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction on a pooled connection (not group-committed)."""
        try:
            with self._connection() as conn, conn.transaction():
                return fn(conn)
        except (psycopg.Error, UnicodeEncodeError) as exc:
            raise translate(exc) from exc

    # -- transactional steps (see _sql_transact) -----------------------------------------

    @contextlib.contextmanager
    def _own_transaction(self) -> Iterator[Connection]:
        with self._connection() as conn, conn.transaction():
            yield conn

    def _lost_race(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error) and exc.sqlstate in _LOST_RACE

    def _translate_error(self, exc: Exception) -> Exception:
        return translate(exc)

    def _still_open(self, conn: Connection) -> bool:
        return conn.info.transaction_status == TransactionStatus.INTRANS

    def _lock_stream(self, conn: Connection, workflow_id: str, key: str) -> None:
        # The writer's connection and a transactional step's may append to one stream at
        # once: the second waits here for the first's commit, then numbers after it.
        conn.execute(LOCK_STREAM, (f"{workflow_id}\x1f{key}",))

    @contextlib.contextmanager
    def _user_view(self, conn: Connection) -> Iterator[None]:
        # The user's tables live in their own schema: the session's default search path,
        # not perdure's (SET LOCAL: until the transaction ends).
        conn.execute(DEFAULT_SEARCH_PATH)
        yield
        if self._still_open(conn):
            conn.execute(SET_SEARCH_PATH, (self.schema,))

    @contextlib.contextmanager
    def _own_view(self, conn: Connection) -> Iterator[None]:
        conn.execute(SET_SEARCH_PATH, (self.schema,))
        yield
        conn.execute(DEFAULT_SEARCH_PATH)

    def _require_existing(self, url: str) -> None:
        """Refuse (``ConfigurationError``, closing this store) a schema that ``migrate``
        never set up: a mistyped ``?schema=`` is not created by what only reads."""
        try:
            found = self.exists()
        except BaseException:
            self.close()
            raise
        if not found:
            self.close()
            raise ConfigurationError(
                f"no perdure schema {self.schema!r} in the database {redact_url(url)}; "
                "nothing was created"
            )

    # -- lifecycle -------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self._read(HAS_SCHEMA, (self.schema,)))

    def migrate(self) -> None:
        shipped = migrations("postgres")
        if self._migrated(shipped, f"schema {self.schema!r}"):
            return

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
            check_versions(applied, shipped, f"schema {self.schema!r}")
            for version, script in shipped:
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
        self._starter.close()
        self._writer.close()
        self._pool.close()

    def listen(self, on_event: Callable[[str], None]) -> bool:
        if self._read("SELECT pg_is_in_recovery()")[0][0]:
            return False  # a hot standby (a read replica) takes no LISTEN: poll
        self._listener.add(on_event)
        return True

    def _notify(self, conn: Connection, event: str) -> None:
        # Delivered at commit, to listeners on every host; pipelined with the write.
        conn.execute("SELECT pg_notify(%s, %s)", (self._channel, event))

    def _notify_params(self, event: str) -> tuple[str, str] | None:
        return self._channel, event

    # -- what locks rows differently from SQLite ---------------------------------------

    def _step_write(self, workflow_id: str, lease: Lease, step: StepRecord) -> Write:
        params = step_params(workflow_id, lease, step)

        def upsert(conn: Connection) -> Callable[[], bool]:
            cursor = conn.execute(_INSERT_STEP, params)
            return lambda: cursor.rowcount == 1

        # Fenced by its own WHERE: alone, no transaction; in a batch, with the others (send_rows).
        return Write(upsert, True, single=True, row=(_INSERT_STEP, params))

    # -- executors and leases ----------------------------------------------------------

    def register_executor(self, executor: ExecutorRecord) -> None:
        # Name this process's sessions after the executor, so that others can end them if
        # it stops renewing its lease while frozen inside a transaction (see _reap).
        self._tag = session_tag(executor.id)
        for writer in (self._writer, self._starter):
            writer.submit(lambda conn: conn.execute(SET_APPLICATION_NAME, (self._tag,))).result()
        self._pool.drain()
        super().register_executor(executor)

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
            rows = conn.execute(
                CLAIM,
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
            return sorted((workflow_record(row) for row in rows), key=lambda r: r.created_at)

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

    # -- waiting: timers, suspension, messages, events -----------------------------------

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
        }

        def suspend(conn: Connection) -> bool:
            if conn.execute(SUSPEND, params).fetchone() is None:
                return False
            if wait_topic is not None:
                # A new statement, so a new snapshot: it sees every message whose sender
                # updated the workflow's row before our update locked it (the sender waited
                # for nothing and committed first). A sender that comes after our lock waits
                # for our commit and then wakes the suspended workflow itself.
                conn.execute(WAKE_IF_PENDING, params)
            breaker = parked_on(wait_topic)
            if breaker is not None:
                state = conn.execute(LOCK_BREAKER, (breaker,)).fetchone()
                if state is not None and state[0] == BreakerState.CLOSED:
                    conn.execute(WAKE, (now, workflow_id))
            self._notify(conn, EVENT_WAKE)
            return True

        return self._writer.submit(suspend, f"suspending workflow {workflow_id!r}")

    def set_event(self, workflow_id: str, lease: Lease, step: StepRecord, key: str) -> Future[bool]:
        check_key("event key", key)

        def write(conn: Connection) -> bool:
            # One statement: the event is written only if the step was (a data-modifying
            # CTE runs whether or not it is read).
            row = conn.execute(
                SET_EVENT,
                (
                    *step_params(workflow_id, lease, step),
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

        return self._writer.submit(write, f"setting event {key!r} of workflow {workflow_id!r}")
