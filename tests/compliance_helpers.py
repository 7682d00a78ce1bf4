"""Shared by the compliance tests: reading a database raw (not through perdure), and a
workflow that stores a secret in every kind of payload."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from conftest import admin_connection, schema_of

import perdure

#: Every table perdure stores data in.
TABLES = (
    "perdure_workflows",
    "perdure_steps",
    "perdure_messages",
    "perdure_events",
    "perdure_operator_actions",
    "perdure_breakers",
    "perdure_workflow_subjects",
    "perdure_streams",
)


def raw_sql(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one statement straight on the database, not through perdure (committed), and
    return its rows (none for a statement that returns none)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            with conn:
                return [tuple(row) for row in conn.execute(sql).fetchall()]
        finally:
            conn.close()
    with admin_connection(url, schema_of(url)) as conn:
        cursor = conn.execute(sql)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def raw_rows(url: str, table: str, order: str = "1", columns: str = "*") -> list[tuple[Any, ...]]:
    """Every row of ``table`` (those ``columns``), read straight from the database."""
    return raw_sql(url, f"SELECT {columns} FROM {table} ORDER BY {order}")


def raw_dump(url: str) -> str:
    """Every table as text; on SQLite, also every byte of the database file and its WAL."""
    text = repr([raw_rows(url, table) for table in TABLES])
    if url.startswith("sqlite"):
        path = Path(url[len("sqlite:///") :])
        for file in (path, path.with_name(path.name + "-wal")):
            if file.exists():
                text += file.read_bytes().decode("latin-1")
    return text


def define_everything(app: perdure.App, secret: str) -> Any:
    """A workflow that puts ``secret`` in its inputs, a step result, a failed attempt's
    error, a child's inputs and result, a message it receives, an event, a stream entry and
    its output."""

    attempts: dict[str, int] = {}

    @app.step(retry=perdure.Retry(max_attempts=2, initial_interval=0.01))
    def fetch(who: str) -> str:
        attempts[who] = attempts.get(who, 0) + 1
        if attempts[who] == 1:
            raise ValueError(f"first attempt failed for {who}")
        return f"record of {who}"

    @app.workflow(name="child")
    def child(who: str) -> str:
        return f"child saw {who}"

    @app.workflow(name="everything")
    def everything(who: str) -> str:
        record = fetch(who)
        seen = app.start(child, who).result()
        perdure.set_event("profile", {"who": who})
        perdure.write_stream("progress", f"progress of {who}")
        message = perdure.recv("reply", timeout=30)
        return f"{record} / {seen} / {message}"

    return everything
