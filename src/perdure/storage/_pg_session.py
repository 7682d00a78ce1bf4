"""PostgreSQL sessions: error translation, liveness, the pipelined batch transaction,
the group committers built of them, and ending the sessions of executors that stopped
renewing their lease.

Helpers of ``_postgres`` that concern connections rather than perdure's tables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg.pq import ConnStatus, Format, TransactionStatus
from psycopg.rows import TupleRow

from .._errors import StoreRejectedError, StoreUnavailableError
from ._batch import GroupCommitter
from ._limits import not_utf8
from ._pg_prepared import RawStatement
from ._pg_rows import as_one, send_rows

Connection = psycopg.Connection[TupleRow]


#: SQLSTATE classes and codes of errors that heal by themselves: the connection or the
#: server (08 connection exception, 53 insufficient resources such as too many
#: connections or a full disk, 57 operator intervention such as a shutdown, 58 system
#: error), and a transaction that lost a race (40001 serialization failure, 40P01
#: deadlock, 55P03 lock not available, 25P03 idle-in-transaction timeout).
_TRANSIENT_CLASSES = ("08", "53", "57", "58")
_TRANSIENT_CODES = ("40001", "40P01", "55P03", "25P03")


#: What a PostgreSQL connection attempt says when waiting cannot help (the server answered
#: and refused, or something else answers at that address), with what to do. libpq gives
#: these no SQLSTATE, so its message is the only place that tells them from an outage.
_PERMANENT_CONNECT_FAILURES = (
    ("does not exist", "create it, or fix the name in the database URL"),
    ("password authentication failed", "fix the user or password in the database URL"),
    ("authentication failed", "fix the user or password in the database URL"),
    ("no password supplied", "add the password to the database URL (or a .pgpass file)"),
    ("no pg_hba.conf entry", "the server refuses this user, host or database (pg_hba.conf)"),
    ("is not permitted to log in", "the role may not log in: use another user"),
    ("permission denied for database", "grant CONNECT on the database, or use another user"),
    (
        "invalid sslmode value",
        "use sslmode=disable, allow, prefer, require, verify-ca or verify-full",
    ),
    ("invalid connection option", "remove the unknown option from the database URL"),
    ("invalid integer value", "fix the option's value in the database URL"),
    ("server does not support SSL", "the server has no SSL: use another sslmode"),
    ("certificate verify failed", "fix the server's certificate or the sslrootcert option"),
    ("invalid response to SSL negotiation", "is it a PostgreSQL server at that host and port?"),
    ("expected authentication request", "is it a PostgreSQL server at that host and port?"),
    ("unsupported frontend protocol", "the server is too old or not PostgreSQL"),
)


def connect_advice(exc: psycopg.Error) -> str | None:
    """What to do about a connection failure that waiting cannot heal (an unknown database
    or role, a bad sslmode, something other than PostgreSQL at the address); None for one
    that can (refused, lost, timed out, a server starting up)."""
    if exc.sqlstate is not None:
        return None
    text = str(exc)
    for pattern, advice in _PERMANENT_CONNECT_FAILURES:
        if pattern in text:
            return advice
    return None


def transient(exc: psycopg.Error) -> bool:
    """Whether ``exc`` is an outage or a lost race, which a retry may heal, rather than a
    refusal of the statement or its data (a value too large for an index, a constraint,
    an invalid value), which no retry heals. psycopg files some refusals under
    ``OperationalError`` (an index row too large is "program limit exceeded", class 54),
    so the SQLSTATE decides; an error without one is the connection's (or the driver's:
    a dead connection, a timeout)."""
    code = exc.sqlstate
    if code is None:
        if connect_advice(exc) is not None:
            return False
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES


#: read_only_sql_transaction: a write on a hot standby, or in a read-only transaction.
_READ_ONLY = "25006"


def translate(exc: Exception) -> Exception:
    """The store's error for a psycopg error (chained to it); any other error unchanged:
    ``StoreUnavailableError`` for what heals (see ``transient``), ``StoreRejectedError``
    for a refusal that no retry heals."""
    error: Exception
    if isinstance(exc, UnicodeEncodeError):
        error = not_utf8(exc)
        error.__cause__ = exc
        return error
    if not isinstance(exc, psycopg.Error):
        return exc
    advice = connect_advice(exc)
    if advice is not None:
        error = StoreRejectedError(
            f"PostgreSQL refused the connection ({first_line(exc)}): {advice}; waiting "
            "will not help"
        )
    elif transient(exc):
        error = StoreUnavailableError(f"PostgreSQL is unavailable: {first_line(exc)}")
    elif exc.sqlstate == _READ_ONLY:
        error = StoreRejectedError(
            f"PostgreSQL refused a write ({first_line(exc)}): this database is read-only "
            "(a read replica, a hot standby, or default_transaction_read_only). perdure "
            "reads workflows there (list, status, inspect, the dashboard's pages); "
            "starting, changing, running or awaiting them needs the primary: point the "
            "database URL at it"
        )
    else:
        error = StoreRejectedError(
            f"PostgreSQL refused the operation ({exc.sqlstate or type(exc).__name__}: "
            f"{first_line(exc)}); this is not an outage and a retry cannot succeed: the "
            "value or the statement is at fault (a value perdure should have refused first, "
            "or a schema changed by hand; please report it)"
        )
    error.__cause__ = exc
    return error


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def broken(conn: Connection, exc: Exception) -> bool:
    return conn.broken or conn.closed


def alive(conn: Connection) -> bool:
    """Whether the connection still looks usable, without a round trip: reads what the
    server sent meanwhile, which is the end of the connection if it closed it (a restart,
    ``pg_terminate_backend``). A connection cut silently (by the network) still looks
    alive; its next batch fails instead."""
    if conn.broken or conn.closed:
        return False
    try:
        # The first read takes the server's farewell (FATAL: terminating connection), the
        # second meets the end of the stream. On a live connection both find nothing.
        conn.pgconn.consume_input()
        conn.pgconn.consume_input()
    except psycopg.Error:
        return False
    return conn.pgconn.status == ConnStatus.OK


@contextlib.contextmanager
def batch_transaction(conn: Connection) -> Iterator[None]:
    """BEGIN ... COMMIT around a batch, in pipeline mode: BEGIN, the statements of the
    writes that read their result after the commit (record_step, complete_workflow) and
    COMMIT travel together, so a batch of them costs one round trip to the server,
    whatever its size: leaving pipeline mode sends the one Sync and reads every result
    (a Sync of our own before that would cost a second, empty, round trip).

    The writer connection is in autocommit mode, and this sends BEGIN and COMMIT itself:
    psycopg's own transaction handling would wait for the server after BEGIN."""
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            yield
            conn.execute("COMMIT")
    except BaseException:
        # Also when COMMIT failed. On a dead connection there is nothing to roll back.
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        raise


class SingleStatement:
    """The context of a batch of one single-statement write (the committer's ``alone``:
    call it with the connection, then enter it). The writer's connection is in autocommit
    mode, so the statement is its own transaction, committed when the server answers it:
    one round trip, no BEGIN or COMMIT statement (see ``_batch``). A connection lost
    before the answer fails the write like a lost COMMIT (``StoreUnavailableError``: it
    may have committed).

    The statement goes straight through libpq as a prepared statement where it can
    (``_pg_prepared.RawStatement``: half the client CPU of psycopg's ``execute``), else
    on the connection's one reused cursor: a new psycopg cursor per statement (its
    transformer, its adapters map, a dumper looked up per parameter) cost about as much
    client CPU as the rest of the statement's round trip. Safe here only:
    a batch alone runs one statement, outside pipeline mode, and its result is read
    before the writer sends anything else (pipelined batches keep a cursor per
    statement: their results are read only at the end). One per writer, used under its
    commit lock: never by two threads at once."""

    __slots__ = ("_conn", "_cursor", "_factory", "_same")

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._cursor: psycopg.Cursor[TupleRow] | None = None
        self._factory: Any = None
        self._same: _Same | None = None

    def __call__(self, conn: Connection) -> SingleStatement:
        if conn is not self._conn or self._cursor is None or self._cursor.closed:
            self._conn, self._factory = conn, conn.cursor_factory
            self._cursor = conn.cursor()
            self._same = _Same(self._cursor, RawStatement(self._cursor))
        return self

    def __enter__(self) -> None:
        assert self._conn is not None
        self._conn.cursor_factory = self._same  # type: ignore[assignment] # a callable

    def __exit__(self, *exc: object) -> None:
        assert self._conn is not None
        self._conn.cursor_factory = self._factory


class _Same:
    """A cursor factory that returns one cursor again and again: the statement through
    libpq where it can go so (``RawStatement``), else ``cursor``."""

    __slots__ = ("_cursor", "_raw")

    def __init__(self, cursor: psycopg.Cursor[TupleRow], raw: RawStatement) -> None:
        self._cursor = cursor
        self._raw = raw

    def __call__(self, conn: Connection, row_factory: Any = None) -> Any:
        cursor = self._cursor
        if row_factory is not None and row_factory is not cursor.row_factory:
            return psycopg.Cursor(conn, row_factory=row_factory)  # not the usual rows
        self._raw.format = _TEXT  # as a new cursor's (a caller may ask for binary)
        return self._raw


_TEXT = Format.TEXT


def session_tag(executor_id: str) -> str:
    """The application_name of an executor's sessions: unique (the executor ID's random
    part) and short enough for PostgreSQL's 63 bytes."""
    return f"perdure-{executor_id.rsplit(':', 1)[-1]}"[:63]


def end_expired_sessions(conn: Connection, executor_id: str, now: float) -> None:
    """End the database sessions of executors whose lease expired.

    A process frozen inside a transaction (SIGSTOP, a VM pause) keeps its row locks,
    and a step record's fence holds one; claims skip locked rows, so its workflows
    could not be taken over while it is frozen, and a pipelined transaction is not
    "idle", so the server's idle timeout does not end it. Its lease expired: it has
    lost its workflows anyway, and ending its sessions releases the locks (when it
    resumes, its writes fail and its executor reconnects).
    """
    expired = conn.execute(
        "SELECT id, lease_expires_at FROM perdure_executors WHERE stopped_at IS NULL "
        "AND lease_expires_at < %s AND id <> %s",
        (now, executor_id),
    ).fetchall()
    if not expired:
        return
    with conn.transaction():
        # Only transactions begun before the lease expired: the sessions a resumed
        # executor opens afterwards (to renew its lease, or to stop) are left alone.
        conn.execute(
            "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity AS a "
            "JOIN unnest(%s::text[], %s::float8[]) AS x (tag, expired_at) "
            "ON a.application_name = x.tag "
            "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
            "AND a.xact_start < to_timestamp(x.expired_at)",
            ([session_tag(row[0]) for row in expired], [row[1] for row in expired]),
        )


def committer(connect: Callable[[], Connection], name: str) -> GroupCommitter[Connection]:
    """A group committer on a connection from ``connect`` (its thread named ``name``):
    batches in one pipelined transaction, a lone statement (or a batch sent as one) in
    autocommit, one-row writes of one statement sent together, errors translated, dead
    connections replaced."""
    return GroupCommitter(
        connect,
        batch_transaction,
        translate,
        name=name,
        broken=broken,
        alive=alive,
        alone=SingleStatement(),
        rows=send_rows,
        as_one=as_one,
    )
