"""The CLI's commands that only read or ask (``list``, ``status``, ``cancel``,
``breakers``) refuse a database that perdure never set up, instead of creating it:
a mistyped PostgreSQL ``?schema=`` is not created, a SQLite file without perdure's
tables is not changed (issue 10, item 18). Real processes, real databases."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from conftest import admin_connection, with_options
from test_cli_output import assert_one_line_error, perdure_cli

import perdure

COMMANDS = [["list"], ["status", "order-1"], ["cancel", "order-1"], ["breakers"]]


@pytest.mark.postgres
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_mistyped_postgres_schema_is_refused_not_created(
    postgres_server: str, args: list[str]
) -> None:
    from psycopg import sql  # as in conftest: only where PostgreSQL is used

    schema = f"typo_{uuid.uuid4().hex[:12]}"
    url = with_options(postgres_server, schema=schema)
    try:
        result = perdure_cli(*args, "--database-url", url)
        assert_one_line_error(
            result, f"no perdure schema '{schema}' in the database", "check --database-url"
        )
        with admin_connection(postgres_server) as conn:
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            assert found.fetchall() == [], "the mistyped schema was created"
    finally:  # should the test fail, leave no schema behind
        with admin_connection(postgres_server) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_an_existing_database_is_read_as_before(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app()

    @app.workflow(name="hello")
    def hello() -> str:
        return "hi"

    with app:
        app.start(hello, workflow_id="order-1").result(timeout=30)
    for args in COMMANDS:
        result = perdure_cli(*args, "--database-url", database_url)
        assert result.returncode == 0, (args, result)
    listed = perdure_cli("list", "--database-url", database_url)
    assert "order-1" in listed.stdout, listed


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_sqlite_file_of_another_application_is_refused_not_changed(
    tmp_path: Path, args: list[str]
) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = perdure_cli(*args, "--database-url", f"sqlite:///{path}")
    assert_one_line_error(result, "no perdure schema in the SQLite database", "other.db")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal, no -shm
