"""Transactional steps (``@app.transaction``): the function's writes to the user's own
tables commit with the step's record, exactly once; on both stores."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import admin_connection

import perdure


class Orders:
    """A table of the user's own in the app's database (on PostgreSQL in a schema of its
    own, as the user's tables are: not perdure's)."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.postgres = database_url.startswith("postgresql")
        self.mark = "%s" if self.postgres else "?"
        if self.postgres:
            self.schema = f"u_{uuid.uuid4().hex}"
            self.table = f"{self.schema}.orders"
            with admin_connection(database_url) as conn:
                conn.execute(f"CREATE SCHEMA {self.schema}")
                conn.execute(f"CREATE TABLE {self.table} (id TEXT PRIMARY KEY, amount INTEGER)")
        else:
            self.table = "orders"
            with self._sqlite() as conn, conn:
                conn.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER)")

    def _sqlite(self) -> contextlib.closing[sqlite3.Connection]:
        return contextlib.closing(sqlite3.connect(self.url[len("sqlite:///") :]))

    def insert(self, conn: Any, order: str, amount: int) -> None:
        conn.execute(f"INSERT INTO {self.table} VALUES ({self.mark}, {self.mark})", (order, amount))

    def rows(self) -> list[tuple[Any, ...]]:
        sql = f"SELECT id, amount FROM {self.table} ORDER BY id"
        if self.postgres:
            with admin_connection(self.url) as conn:
                return list(conn.execute(sql).fetchall())
        with self._sqlite() as conn:
            return conn.execute(sql).fetchall()

    def drop(self) -> None:
        if self.postgres:
            with admin_connection(self.url) as conn:
                conn.execute(f"DROP SCHEMA {self.schema} CASCADE")


@pytest.fixture
def orders(database_url: str) -> Iterator[Orders]:
    # The app creates the file (or schema) first: made here, before any app.
    app = perdure.App(database_url)
    app.store  # noqa: B018 - opened and migrated
    app.shutdown()
    table = Orders(database_url)
    yield table
    table.drop()


def test_a_transaction_commits_with_its_record_and_replays_without_running(
    make_app: Callable[..., perdure.App], orders: Orders
) -> None:
    app = make_app(suspend_after=0.0)
    runs: list[str] = []

    @app.transaction
    def place(order: str, amount: int) -> dict[str, Any]:
        runs.append(order)
        conn = perdure.connection()
        orders.insert(conn, order, amount)
        perdure.write_stream("placed", order)  # committed with the transaction
        return {"order": order, "total": amount * 2}

    @app.workflow(name="shop")
    def shop(order: str) -> dict[str, Any]:
        placed = place(order, 21)
        perdure.recv("go")  # suspends: the workflow replays from the top when it wakes
        return placed

    with app:
        handle = app.start(shop, "o-1")
        app.send(handle.workflow_id, "now", topic="go")
        assert handle.result(timeout=15) == {"order": "o-1", "total": 42}
    assert runs == ["o-1"]  # the replay returned the record
    assert orders.rows() == [("o-1", 21)]
    (step,) = [s for s in handle.status().steps if s.name.endswith("place")]
    assert (step.status, step.attempts) == ("SUCCEEDED", 1)
    entries = app.store.read_stream(handle.workflow_id, "placed")
    assert [(e.value, e.writer) for e in entries] == [('"o-1"', "0#1")]


def test_a_failed_transaction_rolls_back_and_is_retried_by_its_policy(
    make_app: Callable[..., perdure.App], orders: Orders
) -> None:
    app = make_app()
    attempts: list[int] = []

    @app.transaction(retry=perdure.Retry(max_attempts=3, initial_interval=0.01, jitter=0.0))
    def flaky(order: str) -> int:
        attempts.append(1)
        orders.insert(perdure.connection(), f"{order}-{len(attempts)}", len(attempts))
        if len(attempts) < 2:
            raise RuntimeError("the payment service said no")
        return len(attempts)

    @app.transaction
    def doomed(order: str) -> None:
        orders.insert(perdure.connection(), order, 0)
        raise ValueError("never commits")

    @app.workflow(name="pay")
    def pay(order: str) -> int:
        return flaky(order)

    @app.workflow(name="fail")
    def fail(order: str) -> str:
        try:
            doomed(order)
        except ValueError as exc:
            return f"caught: {exc}"
        return "committed"

    with app:
        assert app.run(pay, "p") == 2
        assert app.run(fail, "f") == "caught: never commits"
    # Only the attempt that succeeded left its row.
    assert orders.rows() == [("p-2", 2)]


def test_transactions_in_an_async_workflow_and_where_they_cannot_run(
    make_app: Callable[..., perdure.App], orders: Orders
) -> None:
    app = make_app()

    @app.transaction
    def book(order: str) -> str:
        conn = perdure.connection()
        orders.insert(conn, order, 1)
        if orders.postgres:
            # The user's own search path, not perdure's schema.
            path = conn.execute("SHOW search_path").fetchone()[0]
            assert "t_" not in path, path
        return perdure.workflow_id()

    @app.step
    def plain() -> None:
        perdure.connection()

    @app.workflow(name="async_booking")
    async def async_booking(order: str) -> str:
        return await book(order)  # type: ignore[misc,no-any-return]

    @app.workflow(name="misuse")
    def misuse() -> str:
        try:
            plain()
        except perdure.ConfigurationError as exc:
            return str(exc)
        return "no error"

    with app:
        handle = asyncio.run(app.start_async(async_booking, "a-1"))
        assert handle.result(timeout=15) == handle.workflow_id
        assert "decorate the function with @app.transaction" in app.run(misuse)
    assert orders.rows() == [("a-1", 1)]
    with pytest.raises(perdure.ConfigurationError, match="called outside a workflow"):
        book("x")
    with pytest.raises(perdure.ConfigurationError, match="outside|no transactional step"):
        perdure.connection()
    with pytest.raises(perdure.ConfigurationError, match="async def"):

        @app.transaction
        async def not_sync() -> None:
            pass
