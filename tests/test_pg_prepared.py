"""A lone statement through libpq (``storage/_pg_prepared``): the same rows, counts and
errors as psycopg's cursor gives, on a real PostgreSQL; psycopg's cursor for whatever
would not mean the same in text form."""

from __future__ import annotations

import _thread
import math
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import admin_connection, server_url

from perdure import StoreUnavailableError
from perdure._model import StepState
from perdure.storage._pg_prepared import RawStatement, kinds_of, numbered, text_params
from perdure.storage._pg_session import broken, translate

psycopg = pytest.importorskip("psycopg")


def test_placeholders_are_numbered_and_other_kinds_stay_psycopgs() -> None:
    assert numbered("SELECT %s, %s WHERE a LIKE 'x%%'") == b"SELECT $1, $2 WHERE a LIKE 'x%'"
    assert numbered("SELECT 1") == b"SELECT 1"
    assert numbered("SELECT %(name)s") is None
    assert numbered("SELECT %b") is None


def test_parameters_in_text_form_only_where_they_mean_the_same() -> None:
    text, integer, fraction = kinds_of([25, 20, 701])  # text, int8, float8
    assert (text, integer, fraction) == (0, 1, 2)
    assert kinds_of([21, 23, 700, 1700, 705, 16]) == (1, 1, 2, 2, 0, 0)
    kinds = (text, integer, fraction, text, text)
    assert text_params(("a", 1, 2.5, None, StepState.SUCCEEDED), kinds) == [
        b"a",
        b"1",
        b"2.5",
        None,
        b"SUCCEEDED",
    ]
    assert text_params([1e-05], (fraction,)) == [b"1e-05"]
    assert text_params([7], (fraction,)) == [b"7"]  # an int where a fraction goes
    assert text_params(None, ()) == []
    assert text_params(("a\x00b",), (text,)) is None  # a text parameter would end at the NUL
    assert text_params((1,), (text,)) is None  # the server typed it as text: psycopg's int
    assert text_params((1.5,), (integer,)) is None  # psycopg's float8, cast where it goes
    assert text_params((True,), (integer,)) is None  # psycopg sends a boolean
    assert text_params((math.inf,), (fraction,)) is None
    assert text_params((math.nan,), (fraction,)) is None
    assert text_params((b"bytes",), (text,)) is None
    assert text_params(({"a": 1},), (text,)) is None
    assert text_params({"name": 1}, (integer,)) is None  # named parameters
    assert text_params(("a", "b"), (text,)) is None  # psycopg says what is wrong


@pytest.fixture
def conn(postgres_server: str) -> Iterator[Any]:
    schema = f"t_{uuid.uuid4().hex}"
    with admin_connection(postgres_server) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = server_url(postgres_server)
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as opened:
        opened.execute(
            "CREATE TABLE t (id text PRIMARY KEY, n bigint, x double precision, "
            "flag boolean, note text)"
        )
        yield opened
    with admin_connection(postgres_server) as admin:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


_INSERT = "INSERT INTO t (id, n, x, note) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"


@pytest.mark.postgres
def test_rows_and_counts_are_psycopgs(conn: Any) -> None:
    raw = RawStatement(conn.cursor())
    assert raw.execute(_INSERT, ("a", 7, 1.5, None)) is raw  # sent through libpq
    assert raw.rowcount == 1
    assert raw.execute(_INSERT, ("a", 8, 2.5, "again")).rowcount == 0  # the conflict
    raw.execute(_INSERT, ("b", -(2**40), 1e-05, "é"))
    query = "SELECT id, n, x, flag, note FROM t WHERE id >= %s ORDER BY id"
    assert raw.execute(query, ("a",)).fetchall() == conn.execute(query, ("a",)).fetchall()
    raw.execute(query, ("a",))
    assert raw.fetchone() == ("a", 7, 1.5, None, None)
    assert raw.fetchall() == [("b", -(2**40), 1e-05, None, "é")]
    assert raw.fetchone() is None
    # Prepared once on this connection, then run again and again.
    prepared = conn.execute("SELECT name FROM pg_prepared_statements ORDER BY name").fetchall()
    assert prepared == [("perdure_0",), ("perdure_1",)]


@pytest.mark.postgres
def test_what_text_would_change_goes_through_psycopg(conn: Any) -> None:
    raw = RawStatement(conn.cursor())
    # A boolean parameter: psycopg's cursor ran it (and returned itself).
    ran = raw.execute("UPDATE t SET flag = %s", (True,))
    assert ran is not raw and ran.rowcount == 0
    # A NUL in a string: refused as psycopg refuses it, not cut short.
    with pytest.raises(psycopg.DataError):
        raw.execute(_INSERT, ("a\x00b", 1, 1.0, None))
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    # A statement the server cannot type without psycopg's types: psycopg's from then on.
    for left in (2, 4):
        ran = raw.execute("SELECT %s + %s", (left, 3))
        assert ran is not raw and ran.fetchone() == (left + 3,)
    # A bare parameter the server types as text: an int goes typed, by psycopg, and
    # comes back an int (in text form it would come back as the string '9').
    ran = raw.execute("SELECT %s", (9,))
    assert ran is not raw and ran.fetchone() == (9,)
    assert raw.execute("SELECT %s", ("nine",)) is raw  # a string means the same either way
    assert raw.fetchone() == ("nine",)
    # Binary results asked for (a connection's execute(binary=True) sets it).
    raw.format = psycopg.pq.Format.BINARY
    assert raw.execute("SELECT %s::bigint", (9,)).fetchone() == (9,)


@pytest.mark.postgres
def test_errors_are_psycopgs_and_a_lost_connection_is_an_outage(
    conn: Any, postgres_server: str
) -> None:
    raw = RawStatement(conn.cursor())
    plain = "INSERT INTO t (id) VALUES (%s)"
    raw.execute(plain, ("a",))
    with pytest.raises(psycopg.errors.UniqueViolation) as refused:
        raw.execute(plain, ("a",))
    assert refused.value.sqlstate == "23505"
    assert not broken(conn, refused.value)
    assert raw.execute(plain, ("b",)).rowcount == 1  # the connection goes on
    with admin_connection(postgres_server) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError) as lost:
        raw.execute(plain, ("c",))
    assert broken(conn, lost.value)
    assert isinstance(translate(lost.value), StoreUnavailableError)


@pytest.mark.postgres
def test_statements_deallocated_under_it_are_prepared_again(conn: Any) -> None:
    """psycopg sends DEALLOCATE ALL after a ROLLBACK on a connection where it prepared
    statements of its own (the writer's failed batch), and a pooler may after resetting a
    session: the next statement finds its prepared one gone, prepares it again and runs
    once."""
    raw = RawStatement(conn.cursor())
    raw.execute(_INSERT, ("a", 1, 1.0, None))
    for _ in range(6):  # psycopg prepares a statement of its own after a few runs
        conn.execute("SELECT count(*) FROM t WHERE n = %s", (1,))
    with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
        conn.execute("SELECT 1 / 0")
    conn.execute("SELECT 1")  # psycopg's DEALLOCATE ALL goes before its next statement
    assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    assert raw.execute(_INSERT, ("b", 2, 2.0, None)) is raw
    assert raw.rowcount == 1
    prepared = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
    assert prepared == [("perdure_1",)]  # a new name: perdure_0 could still be there
    assert conn.execute("SELECT id FROM t ORDER BY id").fetchall() == [("a",), ("b",)]


@pytest.mark.postgres
def test_a_statement_that_waits_can_be_interrupted(conn: Any, postgres_server: str) -> None:
    """Waited for as psycopg waits: a Ctrl-C in the thread of a start (the main thread)
    stops the wait and cancels the statement on the server, while the lock it waits for
    is still held; the connection then goes on."""
    raw = RawStatement(conn.cursor())
    raw.execute(_INSERT, ("warm", 0, 0.0, None))  # prepared before the lock is taken
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    with admin_connection(postgres_server, schema) as other:
        other.execute("BEGIN")
        other.execute("INSERT INTO t (id) VALUES ('a')")  # uncommitted: a conflict waits
        timer = threading.Timer(0.5, _thread.interrupt_main)
        timer.start()
        started = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                raw.execute(_INSERT, ("a", 1, 1.0, None))
        finally:
            timer.cancel()
        assert time.monotonic() - started < 10
        assert other.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        other.execute("ROLLBACK")
    assert raw.execute(_INSERT, ("a", 1, 1.0, None)).rowcount == 1
