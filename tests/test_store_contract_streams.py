"""The store contract for streams and transactional steps (see ``test_store_contract.py``);
run against every store."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import admin_connection, schema_of
from store_contract import covers, running, step

from perdure import ConfigurationError
from perdure.storage import Lease, StepRecord, Store, StreamEntry, Transaction, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def _values(entries: list[StreamEntry]) -> list[tuple[int, str | None, str]]:
    return [(entry.offset, entry.value, entry.writer) for entry in entries]


@covers("write_stream", "read_stream")
def test_stream_entries_are_numbered_in_order_fenced_and_end_at_the_close(store: Store) -> None:
    lease = running(store, "a")
    running(store, "b")
    assert store.write_stream("a", lease, "tokens", '"x"', "0#1", 101.0).result() == 0
    assert store.write_stream("a", lease, "tokens", '"y"', "0#1", 102.0).result() == 1
    assert store.write_stream("a", lease, "other", '"z"', "0#2", 103.0).result() == 0
    # Another owner's (or a stale epoch's) write is refused and writes nothing.
    assert store.write_stream("a", Lease("me", 2), "tokens", '"no"', "0#1", 104.0).result() is None
    assert store.write_stream("a", Lease("you", 1), "tokens", '"no"', "0#1", 104.0).result() is None
    assert _values(store.read_stream("a", "tokens")) == [(0, '"x"', "0#1"), (1, '"y"', "0#1")]
    assert store.read_stream("a", "tokens")[0].written_at == 101.0
    assert _values(store.read_stream("a", "tokens", start=1)) == [(1, '"y"', "0#1")]
    assert _values(store.read_stream("a", "tokens", start=0, limit=1)) == [(0, '"x"', "0#1")]
    assert store.read_stream("a", "missing") == [] and store.read_stream("b", "tokens") == []
    # The close marker is the last entry; nothing can follow it.
    assert store.write_stream("a", lease, "tokens", None, "0#1", 105.0).result() == 2
    entries = store.read_stream("a", "tokens")
    assert [entry.closes for entry in entries] == [False, False, True]
    with pytest.raises(ConfigurationError, match="stream 'tokens' of workflow 'a' is closed"):
        store.write_stream("a", lease, "tokens", '"late"', "0#1", 106.0).result()
    assert len(store.read_stream("a", "tokens")) == 3
    assert store.write_stream("a", lease, "other", '"w"', "0#2", 107.0).result() == 1


@covers("write_stream")
def test_a_stream_write_from_the_workflow_is_recorded_with_its_entry_once(store: Store) -> None:
    lease = running(store, "a")
    record = StepRecord("3", "perdure.write_stream", "SUCCEEDED", None, None, 1, None, 110.0)
    assert store.write_stream("a", lease, "k", '"v"', "3", 110.0, record).result() == 0
    # The same position again (a replay that did not see its record): nothing written.
    assert store.write_stream("a", lease, "k", '"v"', "3", 111.0, record).result() is None
    assert _values(store.read_stream("a", "k")) == [(0, '"v"', "3")]
    (recorded,) = store.load_steps("a")
    assert (recorded.position, recorded.name, recorded.output) == ("3", record.name, "0")
    # Fenced: a stale lease records and writes nothing.
    other = StepRecord("4", "perdure.write_stream", "SUCCEEDED", None, None, 1, None, 112.0)
    assert store.write_stream("a", Lease("me", 9), "k", '"v"', "4", 112.0, other).result() is None
    assert len(store.read_stream("a", "k")) == 1 and len(store.load_steps("a")) == 1


def _user_table(store: Store, database_url: str) -> Iterator[str]:
    """A table of the user's own (in its own schema on PostgreSQL); its qualified name."""
    if store.kind == "sqlite":
        path = database_url[len("sqlite:///") :]
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER)")
        yield "orders"
        return
    schema = "u" + schema_of(database_url)
    with admin_connection(database_url) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.orders (id TEXT PRIMARY KEY, amount INTEGER)")
    try:
        yield f"{schema}.orders"
    finally:
        with admin_connection(database_url) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _rows(store: Store, database_url: str, table: str) -> list[tuple[Any, ...]]:
    if store.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(database_url[len("sqlite:///") :])) as conn:
            return conn.execute(f"SELECT id, amount FROM {table} ORDER BY id").fetchall()
    with admin_connection(database_url) as conn:
        return list(conn.execute(f"SELECT id, amount FROM {table} ORDER BY id").fetchall())


@covers("transact")
def test_transact_commits_the_body_with_the_record_or_neither(
    store: Store, database_url: str
) -> None:
    tables = _user_table(store, database_url)
    table = next(tables)
    mark = "%s" if store.kind == "postgresql" else "?"
    lease = running(store, "a")
    record = StepRecord("0", "pay", "SUCCEEDED", None, None, 1, None, 120.0, 119.0)
    calls: list[str] = []

    def insert(order: str, fail: bool = False) -> Any:
        def body(transaction: Transaction) -> str:
            calls.append(order)
            transaction.connection.execute(f"INSERT INTO {table} VALUES ({mark}, 5)", (order,))
            assert transaction.write_stream("s", '"paid"', "0#1", 120.0) >= 0
            if fail:
                raise KeyError("the function failed")
            return '"done"'

        return body

    try:
        # The function fails: its writes (the row, the stream entry) roll back, and its own
        # error comes out unchanged.
        with pytest.raises(KeyError, match="the function failed"):
            store.transact("a", lease, record, insert("o1", fail=True))
        assert _rows(store, database_url, table) == [] and store.load_steps("a") == []
        assert store.read_stream("a", "s") == []
        # Committed: the row, the stream entry and the step's record, together.
        assert store.transact("a", lease, record, insert("o2")) is True
        assert _rows(store, database_url, table) == [("o2", 5)]
        (recorded,) = store.load_steps("a")
        assert (recorded.status, recorded.output, recorded.started_at) == ("SUCCEEDED", '"done"', 119.0)
        assert _values(store.read_stream("a", "s")) == [(0, '"paid"', "0#1")]
        # The position is final, or the lease stale: the function does not even run.
        assert store.transact("a", lease, record, insert("o3")) is False
        later = StepRecord("1", "pay", "SUCCEEDED", None, None, 1, None, 121.0)
        assert store.transact("a", Lease("me", 7), later, insert("o4")) is False
        assert calls == ["o1", "o2"] and _rows(store, database_url, table) == [("o2", 5)]
    finally:
        tables.close()


@covers("transact")
def test_transact_runs_a_lost_race_again_and_refuses_a_commit_by_hand(
    store: Store, database_url: str
) -> None:
    tables = _user_table(store, database_url)
    table = next(tables)
    mark = "%s" if store.kind == "postgresql" else "?"
    lease = running(store, "a")
    tries: list[int] = []

    def racy(transaction: Transaction) -> str:
        conn = transaction.connection
        conn.execute(f"INSERT INTO {table} VALUES ({mark}, {mark})", (f"r{len(tries)}", 1))
        tries.append(1)
        if len(tries) < 3:
            # What the database says when the transaction lost a race.
            if store.kind == "postgresql":
                conn.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'lost' USING ERRCODE = 'serialization_failure'; "
                    "END $$"
                )
            raise sqlite3.OperationalError("database is locked")
        return "1"

    try:
        record = StepRecord("0", "racy", "SUCCEEDED", None, None, 1, None, 130.0)
        assert store.transact("a", lease, record, racy) is True
        assert len(tries) == 3  # two lost races, run again each time
        assert _rows(store, database_url, table) == [("r2", 1)]  # only the last one's writes

        def commits(transaction: Transaction) -> str:
            conn = transaction.connection
            conn.execute(f"INSERT INTO {table} VALUES ({mark}, 2)", ("c",))
            conn.execute("COMMIT")
            return "2"

        other = StepRecord("1", "commits", "SUCCEEDED", None, None, 1, None, 131.0)
        with pytest.raises(ConfigurationError, match="ended the transaction itself"):
            store.transact("a", lease, other, commits)
        assert [s.position for s in store.load_steps("a")] == ["0"]
    finally:
        tables.close()
