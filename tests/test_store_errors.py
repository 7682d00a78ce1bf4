"""What a store says when something is wrong (issue 10, items 1, 10 and 11): permanent
errors apart from outages, keys refused before writing, schema versions it does not
know, and SQLite files that cannot be used."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import admin_connection, schema_of

import perdure
from perdure import ConfigurationError, StoreError, StoreUnavailableError
from perdure._errors import InvalidValueError, StoreRejectedError
from perdure.storage import Lease, NewWorkflow, Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def new(workflow_id: str) -> NewWorkflow:
    return NewWorkflow(workflow_id, "checkout", "{}", "json", "1", 100.0)


# -- item 1: permanent errors are not outages ---------------------------------------------------


@pytest.mark.postgres
def test_postgres_an_index_row_too_large_is_rejected_not_unavailable(postgres_url: str) -> None:
    """A value past the btree limit (class 54, which psycopg files under OperationalError)
    fails at once as StoreRejectedError, and the writer goes on."""
    psycopg = pytest.importorskip("psycopg")
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        writer = store._writer  # type: ignore[attr-defined]
        # Random hex does not compress under the limit: what validation would refuse
        # first, sent past it.
        started = time.monotonic()
        future = writer.submit(
            lambda conn: conn.execute(
                "INSERT INTO perdure_events (workflow_id, key, value, updated_at) "
                "SELECT 'a', string_agg(md5(random()::text), ''), '1', 0 "
                "FROM generate_series(1, 400)"
            )
        )
        with pytest.raises(StoreRejectedError) as info:
            future.result(timeout=10)
        assert time.monotonic() - started < 5
        assert not isinstance(info.value, StoreUnavailableError)
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert "not an outage" in str(info.value)
        assert store.record_step(
            "a",
            Lease("me", 1),
            perdure.storage.StepRecord("0", "s", "SUCCEEDED", "1", None, 1, None, 1.0),
        ).result()
    finally:
        store.close()


def test_postgres_errors_are_sorted_by_whether_a_retry_can_heal_them() -> None:
    psycopg = pytest.importorskip("psycopg")
    from perdure.storage._pg_session import translate

    errors = psycopg.errors
    unavailable = [
        psycopg.OperationalError("connection lost"),  # no SQLSTATE: the connection's
        errors.AdminShutdown("terminating connection due to administrator command"),
        errors.CannotConnectNow("the database system is starting up"),
        errors.TooManyConnections("sorry, too many clients already"),
        errors.SerializationFailure("could not serialize access"),
        errors.DeadlockDetected("deadlock detected"),
        errors.LockNotAvailable("could not obtain lock"),
        errors.DiskFull("could not extend file"),
    ]
    rejected = [
        errors.ProgramLimitExceeded("index row requires 16016 bytes, maximum size is 8191"),
        errors.UniqueViolation("duplicate key"),
        errors.UndefinedTable("relation does not exist"),
        errors.InvalidParameterValue("invalid value"),
        errors.CharacterNotInRepertoire("invalid byte sequence for encoding UTF8: 0x00"),
        errors.InsufficientPrivilege("permission denied"),
    ]
    for exc in unavailable:
        assert isinstance(translate(exc), StoreUnavailableError), exc
    for exc in rejected:
        error = translate(exc)
        assert isinstance(error, StoreRejectedError) and error.__cause__ is exc, exc
        assert not isinstance(error, StoreUnavailableError)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"path": "/perdure_no_such_db"}, 'database "perdure_no_such_db" does not exist'),
        ({"user": "perdure_no_such_role"}, 'role "perdure_no_such_role" does not exist'),
        ({"query": "sslmode=bogus"}, "sslmode"),
    ],
)
def test_postgres_a_connection_refused_for_good_is_not_an_outage(
    postgres_url: str, change: dict[str, str], says: str
) -> None:
    """Issue 10, item 15: an unknown database or role, or a bad sslmode, was reported as
    "unavailable", so a worker waited for it for ever. libpq gives these no SQLSTATE; the
    store tells them apart and says what to do."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(postgres_url)
    if "user" in change:
        parts = parts._replace(netloc=f"{change['user']}@{parts.hostname}:{parts.port or 5432}")
    if "path" in change:
        parts = parts._replace(path=change["path"])
    if "query" in change:
        parts = parts._replace(query=change["query"])
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        store = open_store(urlunsplit(parts))
        try:
            store.migrate()
        finally:
            store.close()
    assert time.monotonic() - started < 10
    assert not isinstance(info.value, StoreUnavailableError), info.value
    assert says in str(info.value) and "waiting will not help" in str(info.value)


def test_a_key_too_long_is_refused_at_once_by_the_app(make_app) -> None:  # type: ignore[no-untyped-def]
    """``app.start`` with a 3,000-character ID fails at once with an error that names the
    ID and the limit, on both stores (it used to say "unavailable" on PostgreSQL and be
    accepted by SQLite)."""
    app = make_app()

    @app.workflow(name="checkout")
    def checkout() -> int:
        return 1

    started = time.monotonic()
    with app, pytest.raises(InvalidValueError, match="workflow_id") as info:
        app.start(checkout, workflow_id="x" * 3000)
    assert time.monotonic() - started < 5
    assert "1,000 bytes" in str(info.value) and "3,000" in str(info.value)
    assert isinstance(info.value, ConfigurationError)


# -- item 10: a schema version this perdure does not know ---------------------------------------


def _add_version(database_url: str, version: int) -> None:
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("INSERT INTO perdure_schema (version) VALUES (?)", (version,))
    else:
        with admin_connection(database_url, schema_of(database_url)) as conn:
            conn.execute("INSERT INTO perdure_schema (version) VALUES (%s)", (version,))


def test_migrate_refuses_a_schema_migrated_by_a_newer_perdure(database_url: str) -> None:
    first = open_store(database_url)
    first.migrate()
    first.close()
    _add_version(database_url, 999)
    store = open_store(database_url)
    try:
        with pytest.raises(ConfigurationError) as info:
            store.migrate()
        message = str(info.value)
        assert "999" in message and "newer perdure" in message and "Upgrade perdure" in message
    finally:
        store.close()


# -- item 11: SQLite errors name the file and say what is wrong ----------------------------------


def _open(path: Path) -> Store:
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    return store


def test_sqlite_a_missing_folder_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "app.db"
    with pytest.raises(ConfigurationError) as info:
        _open(path)
    assert str(tmp_path / "nowhere") in str(info.value) and "does not exist" in str(info.value)


def test_sqlite_a_folder_in_place_of_the_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    path.mkdir()
    with pytest.raises(StoreError) as info:
        _open(path)
    assert str(path) in str(info.value) and "is a folder" in str(info.value)
    assert not isinstance(info.value, StoreUnavailableError)


@pytest.mark.parametrize("size", [0, 100, 1000])
def test_sqlite_a_truncated_or_foreign_file_is_not_called_locked(tmp_path: Path, size: int) -> None:
    good = tmp_path / "good.db"
    store = _open(good)
    store.create_workflow(new("a"), None, None).result()
    store.close()
    path = tmp_path / "app.db"
    data = good.read_bytes()
    path.write_bytes(data[:size] if size else b"not a database at all, just text\n" * 64)
    with pytest.raises(StoreError) as info:
        store = _open(path)
        store.get_workflow("a")
        store.close()
    message = str(info.value)
    assert str(path) in message and "locked" not in message, message
    assert "not a readable SQLite database" in message, message
    assert not isinstance(info.value, StoreUnavailableError)
    assert isinstance(info.value.__cause__, sqlite3.Error)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="runs as root, whom chmod 000 does not stop from reading and writing a file",
)
def test_sqlite_a_file_without_permissions_is_named(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _open(path).close()
    path.chmod(0)
    try:
        with pytest.raises(StoreError) as info:
            store = _open(path)
            store.close()
        message = str(info.value)
        assert str(path) in message and "permissions" in message and "locked" not in message
    finally:
        path.chmod(0o600)


def test_sqlite_errors_name_the_file_for_each_kind_of_failure(tmp_path: Path) -> None:
    """The messages for the failures that cannot be staged as any user (a failing disk,
    a read-only file system): each names the file and what to check."""
    from perdure.storage._sqlite_errors import translate

    path = tmp_path / "app.db"
    path.touch()
    cases = {
        "disk I/O error": (StoreError, "disk I/O error"),
        "database or disk is full": (StoreError, "disk is full"),
        "attempt to write a readonly database": (StoreError, "read-only"),
        "database is locked": (StoreUnavailableError, "locked by another process"),
        "unable to open database file": (StoreError, "cannot open"),
    }
    for text, (kind, needle) in cases.items():
        error = translate(sqlite3.OperationalError(text), path, 5000)
        assert type(error) is kind and needle in str(error) and str(path) in str(error), error
    rejected = translate(sqlite3.IntegrityError("UNIQUE constraint failed"), path, 5000)
    assert isinstance(rejected, StoreRejectedError)


@pytest.mark.postgres
def test_postgres_a_refused_write_names_the_operation_and_the_workflow(postgres_url: str) -> None:
    """A payload PostgreSQL cannot store (a NUL byte: perdure's serializers never write
    one, a hand-made call can) fails that write alone, naming it, and nothing else."""
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        with pytest.raises(StoreRejectedError) as info:
            store.send_message("a", "t", '"\x00"', None, 1.0).result(timeout=10)
        assert "sending a message on topic 't' to workflow 'a'" in str(info.value)
        assert store.send_message("a", "t", '"ok"', None, 2.0).result(timeout=10) is True
    finally:
        store.close()


def test_text_no_database_can_store_is_rejected_not_leaked(store: Store) -> None:
    """A lone surrogate in a value that is not a key (a payload built by hand; perdure's
    serializers escape them) is refused as StoreRejectedError, not a raw
    UnicodeEncodeError, and the writer goes on."""
    store.create_workflow(new("a"), "me", 500.0).result()
    with pytest.raises(StoreRejectedError, match="not valid Unicode") as info:
        store.send_message("a", "t", '"\ud800"', None, 1.0).result(timeout=10)
    assert isinstance(info.value.__cause__, UnicodeEncodeError)
    assert "workflow 'a'" in str(info.value)
    assert store.send_message("a", "t", '"ok"', None, 2.0).result(timeout=10) is True


def test_a_read_with_text_no_database_can_store_is_rejected_not_leaked(store: Store) -> None:
    with pytest.raises(StoreRejectedError, match="not valid Unicode"):
        store.get_workflow("a\ud800")
    with pytest.raises(StoreRejectedError, match="not valid Unicode"):
        store.set_note("a\ud800", "x", 1.0)
    assert store.get_workflow("a") is None


def test_a_workflow_with_a_key_no_store_accepts_fails_at_once_with_a_clear_error(
    make_app,  # type: ignore[no-untyped-def]
) -> None:
    """Issue 10, item 1: an event key, a message topic or a child's ID over the limit
    fails the workflow with an error that names the field (it used to retry forever on
    PostgreSQL, and be accepted by SQLite)."""
    app = make_app()

    @app.workflow(name="child")
    def child() -> int:
        return 1

    @app.workflow(name="publisher")
    def publisher() -> int:
        perdure.set_event("k" * 3000, 1)
        return 1

    @app.workflow(name="receiver")
    def receiver() -> int:
        value: int = perdure.recv(topic="t" * 3000, timeout=1)
        return value

    @app.workflow(name="parent")
    def parent() -> int:
        value: int = app.start(child, workflow_id="c" * 3000).result()
        return value

    with app:
        for workflow, field in (
            (publisher, "event key"),
            (receiver, "message topic"),
            (parent, "workflow_id"),
        ):
            handle = app.start(workflow)
            started = time.monotonic()
            with pytest.raises(InvalidValueError, match=field):
                handle.result(timeout=20)
            assert time.monotonic() - started < 10
            assert handle.status().status == "FAILED"
