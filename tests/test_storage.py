"""The storage contract, run against every store (the conformance suite), migrations,
and what is particular to each store (SQLite's file, PostgreSQL's server)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import admin_connection, schema_of, server_url, with_options

from perdure import ConfigurationError, StoreError, StoreUnavailableError
from perdure.storage import (
    EVENT_DONE,
    EVENT_READY,
    HELD_BY_EXECUTOR,
    ExecutorRecord,
    Lease,
    NewWorkflow,
    StepRecord,
    Store,
    open_store,
)
from perdure.storage._batch import GroupCommitter
from perdure.storage._queries import list_query, migrations
from perdure.storage._sqlite import split_statements


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def new(
    workflow_id: str, name: str = "checkout", at: float = 100.0, version: str = "1"
) -> NewWorkflow:
    return NewWorkflow(workflow_id, name, '{"args":[],"kwargs":{}}', "json", version, at)


def step(position: str, status: str = "SUCCEEDED", attempts: int = 1) -> StepRecord:
    output = '{"ok":true}' if status == "SUCCEEDED" else None
    error = None if status == "SUCCEEDED" else '{"type":"builtins:ValueError","message":"x"}'
    next_at = 200.0 if status == "RETRYING" else None
    return StepRecord(position, "s", status, output, error, attempts, next_at, 150.0)


def test_create_is_idempotent_and_can_claim_at_once(store: Store) -> None:
    record, created = store.create_workflow(new("a"), "exec-1", 500.0).result()
    assert created and (record.status, record.owner, record.epoch) == ("RUNNING", "exec-1", 1)
    again, created = store.create_workflow(new("a", name="other"), None, None).result()
    assert not created and again == record
    pending, created = store.create_workflow(new("b"), None, None).result()
    assert created and (pending.status, pending.owner, pending.epoch) == ("PENDING", None, 0)


def test_record_step_is_fenced_by_the_lease(store: Store) -> None:
    store.create_workflow(new("a"), "exec-1", 500.0).result()
    assert not store.record_step("a", Lease("exec-1", 2), step("0")).result()
    assert not store.record_step("a", Lease("exec-2", 1), step("0")).result()
    assert not store.record_step("missing", Lease("exec-1", 1), step("0")).result()
    assert store.load_steps("a") == []
    assert store.record_step("a", Lease("exec-1", 1), step("0", "RETRYING")).result()
    assert store.record_step("a", Lease("exec-1", 1), step("0", "SUCCEEDED", 2)).result()
    # A final record is never overwritten.
    assert not store.record_step("a", Lease("exec-1", 1), step("0", "FAILED", 3)).result()
    assert store.record_step("a", Lease("exec-1", 1), step("1")).result()
    steps = store.load_steps("a")
    assert [(s.position, s.status, s.attempts) for s in steps] == [
        ("0", "SUCCEEDED", 2),
        ("1", "SUCCEEDED", 1),
    ]


def test_outcome_is_recorded_exactly_once(store: Store) -> None:
    store.create_workflow(new("a"), "exec-1", 500.0).result()
    lease = Lease("exec-1", 1)
    assert not store.complete_workflow("a", Lease("exec-1", 9), "FAILED", None, "{}", 1.0).result()
    assert store.complete_workflow("a", lease, "SUCCEEDED", "1", None, 300.0).result()
    assert not store.complete_workflow("a", lease, "FAILED", None, "{}", 301.0).result()
    record = store.get_workflow("a")
    assert record is not None
    assert (record.status, record.output, record.owner, record.finished_at) == (
        "SUCCEEDED",
        "1",
        None,
        300.0,
    )
    # No step can be recorded after the outcome.
    assert not store.record_step("a", lease, step("9")).result()


def test_claim_takes_unowned_expired_and_dead_owners_work(store: Store) -> None:
    store.create_workflow(new("pending", at=1), None, None).result()
    store.create_workflow(new("expired", at=2), "exec-old", 50.0).result()
    store.create_workflow(new("alive", at=3), "exec-alive", 500.0).result()
    store.create_workflow(new("dead", at=4), "exec-dead", 500.0).result()
    store.create_workflow(new("other-name", name="refund", at=5), None, None).result()
    store.create_workflow(new("other-version", at=6, version="2"), None, None).result()
    claimed = store.claim_workflows(
        "me", ["checkout"], "1", now=100.0, lease_expires_at=115.0, dead_owners=["exec-dead"]
    )
    assert [r.id for r in claimed] == ["pending", "expired", "dead"]
    assert all(r.owner == "me" and r.status == "RUNNING" for r in claimed)
    assert [(r.epoch, r.recoveries) for r in claimed] == [(1, 0), (2, 1), (2, 1)]
    assert store.claim_workflows("other", ["checkout"], "1", 100.0, 115.0) == []
    unclaimable = store.unclaimable_workflows(["checkout"], "1", now=100.0)
    assert sorted(r.id for r in unclaimable) == ["other-name", "other-version"]


def test_claim_limit_and_order(store: Store) -> None:
    for i in range(5):
        store.create_workflow(new(f"w{i}", at=10 - i), None, None).result()
    claimed = store.claim_workflows("me", ["checkout"], "1", 100.0, 115.0, limit=2)
    assert [r.id for r in claimed] == ["w4", "w3"]


def test_heartbeat_release_and_executors(store: Store) -> None:
    store.register_executor(ExecutorRecord("me", "host", 1, "1", 1.0, 1.0, 16.0, None))
    store.create_workflow(new("a"), "me", 16.0).result()
    store.create_workflow(new("b"), "me", 16.0).result()
    assert store.heartbeat("me", 10.0, 25.0) == {"a", "b"}
    record = store.get_workflow("a")
    assert record is not None and record.lease_expires_at == 16.0  # the executor's row only
    assert [e.id for e in store.list_executors()] == ["me"]
    assert store.release_workflows("me", 11.0) == 2
    record = store.get_workflow("b")
    assert record is not None and (record.owner, record.status) == (None, "RUNNING")
    assert store.list_executors() == []


def test_list_filters_and_order(store: Store) -> None:
    for i in range(4):
        store.create_workflow(
            new(f"w{i}", name="a" if i % 2 else "b", at=float(i)), None, None
        ).result()
    store.complete_workflow("w3", Lease("x", 0), "FAILED", None, "{}", 9.0).result()
    assert [r.id for r in store.list_workflows()] == ["w3", "w2", "w1", "w0"]
    assert [r.id for r in store.list_workflows(newest_first=False, limit=2)] == ["w0", "w1"]
    assert [r.id for r in store.list_workflows(name="a")] == ["w3", "w1"]
    assert [r.id for r in store.list_workflows(status="PENDING", created_after=0.5)] == [
        "w3",
        "w2",
        "w1",
    ]
    assert [r.id for r in store.list_workflows(created_before=1.5)] == ["w1", "w0"]


def test_concurrent_writes_share_commits_and_one_bad_write_fails_alone(store: Store) -> None:
    store.create_workflow(new("a"), "exec-1", 500.0).result()
    futures = []

    def write(start: int) -> None:
        for i in range(start, start + 50):
            futures.append(store.record_step("a", Lease("exec-1", 1), step(str(i))))

    threads = [threading.Thread(target=write, args=(n * 50,)) for n in range(4)]
    for thread in threads:
        thread.start()
    bad = store._writer.submit(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))  # type: ignore[attr-defined]
    for thread in threads:
        thread.join()
    assert all(f.result() for f in futures)
    with pytest.raises(StoreError, match="no such table|does not exist"):
        bad.result()
    assert len(store.load_steps("a")) == 200


def test_store_errors_are_translated(store: Store) -> None:
    future = store._writer.submit(lambda conn: conn.execute("SELECT * FROM nowhere"))  # type: ignore[attr-defined]
    with pytest.raises(StoreError) as info:
        future.result()
    assert not isinstance(info.value, sqlite3.Error)
    if store.kind == "postgresql":
        import psycopg

        assert not isinstance(info.value, psycopg.Error)
        assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
    # The writer goes on after a failed write.
    assert store.create_workflow(new("after"), None, None).result()[1]


def test_suspended_workflow_is_claimed_only_when_it_wakes(store: Store) -> None:
    store.create_workflow(new("a"), "exec-1", 500.0).result()
    assert not store.suspend_workflow("a", Lease("exec-1", 2), 300.0, None, 100.0).result()
    assert store.next_wake_at(after=0.0) is None
    assert store.suspend_workflow("a", Lease("exec-1", 1), 300.0, None, 100.0).result()
    record = store.get_workflow("a")
    assert record is not None
    assert (record.status, record.owner, record.wake_at, record.wait_topic) == (
        "RUNNING",
        None,
        300.0,
        None,
    )
    # A suspended workflow holds no lease, and can record nothing more.
    assert not store.record_step("a", Lease("exec-1", 1), step("0")).result()
    assert store.next_wake_at(after=0.0) == 300.0
    assert store.next_wake_at(after=300.0) is None
    assert store.claim_workflows("me", ["checkout"], "1", 299.0, 315.0) == []
    assert store.unclaimable_workflows(["other"], "1", now=299.0) == []
    (claimed,) = store.claim_workflows("me", ["checkout"], "1", 300.0, 315.0)
    # Waking is not a recovery; the wake time is cleared.
    assert (claimed.epoch, claimed.recoveries, claimed.wake_at) == (2, 0, None)
    assert store.next_wake_at(after=0.0) is None


def test_messages_are_consumed_in_order_exactly_once_with_their_record(store: Store) -> None:
    store.create_workflow(new("a"), "exec-1", 500.0).result()
    lease = Lease("exec-1", 1)
    for i in range(3):
        assert store.send_message("a", "t", f'"m{i}"', None, 100.0 + i).result() is True
    assert store.send_message("a", "other", '"x"', None, 104.0).result() is True
    recv = StepRecord("0", "perdure.recv", "SUCCEEDED", None, None, 1, None, 0.0)
    assert store.consume_message("a", Lease("exec-1", 2), "t", recv, 110.0).result() == (
        False,
        None,
        None,
    )
    assert store.consume_message("a", lease, "t", recv, 110.0).result() == (True, '"m0"', None)
    # The position now holds a final record: it can't consume another message.
    assert store.consume_message("a", lease, "t", recv, 111.0).result() == (False, None, None)
    got = []
    for position in ("1", "2", "3"):
        at = StepRecord(position, "perdure.recv", "SUCCEEDED", None, None, 1, None, 0.0)
        got.append(store.consume_message("a", lease, "t", at, 112.0).result())
    assert got == [(True, '"m1"', None), (True, '"m2"', None), (True, None, None)]
    steps = store.load_steps("a")
    assert [(s.position, s.output) for s in steps] == [("0", '"m0"'), ("1", '"m1"'), ("2", '"m2"')]
    # A WAITING record (a recv's deadline) is replaced by the message's record.
    waiting = StepRecord("3", "perdure.recv", "WAITING", None, None, 1, 200.0, 113.0)
    assert store.record_step("a", lease, waiting).result()
    at = StepRecord("3", "perdure.recv", "SUCCEEDED", None, None, 1, None, 0.0)
    assert store.consume_message("a", lease, "other", at, 114.0).result() == (True, '"x"', None)
    assert store.load_steps("a")[-1].status == "SUCCEEDED"


def test_send_is_idempotent_and_wakes_a_workflow_waiting_on_its_topic(store: Store) -> None:
    assert store.send_message("missing", "", "1", None, 100.0).result() is None
    store.create_workflow(new("a"), "exec-1", 500.0).result()
    store.create_workflow(new("b"), "exec-1", 500.0).result()
    assert store.send_message("a", "", "1", "key-1", 100.0).result() is True
    assert store.send_message("a", "", "2", "key-1", 101.0).result() is False
    assert store.send_message("b", "", "3", "key-1", 101.0).result() is True  # per workflow
    # A message already pending makes a recv's suspension wake at once.
    assert store.suspend_workflow("a", Lease("exec-1", 1), 900.0, "", 102.0).result()
    record = store.get_workflow("a")
    assert record is not None and record.wake_at == 102.0
    # A suspended workflow is woken by a message on its topic only.
    store.create_workflow(new("c"), "exec-1", 500.0).result()
    assert store.suspend_workflow("c", Lease("exec-1", 1), 900.0, "t", 102.0).result()
    assert store.send_message("c", "other", "1", None, 103.0).result() is True
    record = store.get_workflow("c")
    assert record is not None and (record.wake_at, record.wait_topic) == (900.0, "t")
    assert store.send_message("c", "t", "2", None, 104.0).result() is True
    record = store.get_workflow("c")
    assert record is not None and record.wake_at == 104.0
    claimed = store.claim_workflows("me", ["checkout"], "1", 105.0, 115.0)
    assert sorted(r.id for r in claimed) == ["a", "c"]
    # A finished workflow takes no message: nothing would ever receive it.
    assert store.complete_workflow("b", Lease("exec-1", 1), "SUCCEEDED", "1", None, 106.0).result()
    assert store.send_message("b", "", "4", None, 107.0).result() is None


def test_events_are_set_with_their_record(store: Store) -> None:
    store.create_workflow(new("a"), "exec-1", 500.0).result()
    lease = Lease("exec-1", 1)
    first = StepRecord("0", "perdure.set_event", "SUCCEEDED", '"one"', None, 1, None, 100.0)
    assert store.get_event("a", "k") is None
    assert not store.set_event("a", Lease("exec-1", 2), first, "k").result()
    assert store.get_event("a", "k") is None
    assert store.set_event("a", lease, first, "k").result()
    assert store.get_event("a", "k") == '"one"'
    # The same position again (a replay that did not know): nothing changes.
    again = StepRecord("0", "perdure.set_event", "SUCCEEDED", '"two"', None, 1, None, 101.0)
    assert not store.set_event("a", lease, again, "k").result()
    assert store.get_event("a", "k") == '"one"'
    later = StepRecord("1", "perdure.set_event", "SUCCEEDED", '"three"', None, 1, None, 102.0)
    assert store.set_event("a", lease, later, "k").result()
    assert store.get_event("a", "k") == '"three"'


def schema(path: str) -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    return [(kind, name, " ".join((sql or "").split())) for kind, name, sql in rows]


def test_fresh_schema_equals_the_migrated_one(tmp_path) -> None:
    """Upgrading a database of every older version gives the same schema as a fresh one."""
    fresh = tmp_path / "fresh.db"
    store = open_store(f"sqlite:///{fresh}")
    store.migrate()
    store.migrate()  # idempotent
    store.close()
    versions = [version for version, _ in migrations("sqlite")]
    # Distinct and increasing from 1; a number may be missing on a branch whose sibling
    # (developed beside it) holds it: each migration depends only on those below it.
    assert versions[0] == 1 and versions == sorted(set(versions)), versions
    for old_version in range(0, len(versions)):
        old = tmp_path / f"v{old_version}.db"
        with contextlib.closing(sqlite3.connect(old)) as conn, conn:
            conn.execute("CREATE TABLE perdure_schema (version INTEGER NOT NULL)")
            for version, script in migrations("sqlite")[:old_version]:
                for statement in split_statements(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO perdure_schema VALUES (?)", (version,))
        upgraded = open_store(f"sqlite:///{old}")
        upgraded.migrate()
        upgraded.close()
        assert schema(str(old)) == schema(str(fresh))


LISTING_FILTERS = [
    {},
    {"status": "RUNNING"},
    {"name": "checkout"},
    {"status": "FAILED", "created_after": 5.0},
    {"name": "checkout", "created_before": 5.0},
    {"created_after": 1.0, "created_before": 5.0},
    # Later pages (keyset on (created_at, id)): still a range, with no sort.
    {"after": (5000.0, "w5000")},
    {"status": "FAILED", "after": (5000.0, "w5000")},
    {"name": "checkout", "created_after": 5.0, "after": (5000.0, "w5000")},
    {"status": "RUNNING", "after": (5000.0, "w5000")},
]


@pytest.mark.parametrize("filters", LISTING_FILTERS)
def test_listing_is_an_index_scan(store: Store, database_url: str, filters: dict) -> None:
    """Listing by status, name and time never scans or sorts the whole table."""
    args = (
        filters.get("status"),
        filters.get("name"),
        filters.get("created_after"),
        filters.get("created_before"),
        50,
        True,
        filters.get("after"),
    )
    if store.kind == "postgresql":
        query, params = list_query("%s", *args)
        with admin_connection(database_url, schema_of(database_url)) as conn:
            # A table of realistic size and statistics: on a few rows a scan is cheapest.
            conn.execute(
                "INSERT INTO perdure_workflows (id, name, status, inputs, serializer, "
                "app_version, epoch, created_at, updated_at) "
                "SELECT 'w' || i, (ARRAY['checkout', 'refund', 'ship', 'mail'])[i % 4 + 1], "
                "(ARRAY['PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED'])[i % 5 + 1], "
                "'{}', 'json', '1', 0, i, i FROM generate_series(1, 20000) AS i"
            )
            conn.execute("ANALYZE perdure_workflows")
            rows = conn.execute(f"EXPLAIN {query}", params).fetchall()  # type: ignore[call-overload]
        plan = " | ".join(row[0] for row in rows)
        assert "Index" in plan and "Sort" not in plan and "Seq Scan" not in plan, plan
        return
    sql, params = list_query("?", *args)
    with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as conn:
        plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "INDEX" in plan and "TEMP B-TREE" not in plan, plan


# -- group commit, independent of any database ------------------------------------------


class FakeConnection:
    """A connection that runs writes as plain calls, and can be made to die."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.dead = False
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Dead(Exception):
    pass


def test_group_committer_replaces_a_broken_connection() -> None:
    opened: list[FakeConnection] = []
    refuse = threading.Event()

    def connect() -> FakeConnection:
        if refuse.is_set():
            raise Dead("refused")
        opened.append(FakeConnection(len(opened)))
        return opened[-1]

    @contextlib.contextmanager
    def transaction(conn: FakeConnection) -> Iterator[None]:
        if conn.dead:
            raise Dead("connection lost")
        yield

    def translate(exc: Exception) -> Exception:
        return StoreUnavailableError(str(exc)) if isinstance(exc, Dead) else exc

    writer: GroupCommitter[FakeConnection] = GroupCommitter(
        connect,
        transaction,
        translate,
        name="test-writer",
        broken=lambda conn, exc: conn.dead,
    )
    try:
        assert writer.submit(lambda conn: conn.number).result() == 0
        # A deferred result is read after the commit.
        read: list[int] = []
        deferred = writer.submit_deferred(lambda conn: lambda: read.append(conn.number) or 7)
        assert deferred.result() == 7 and read == [0]
        opened[0].dead = True
        with pytest.raises(StoreUnavailableError, match="connection lost"):
            writer.submit(lambda conn: conn.number).result()
        assert opened[0].closed
        # The next write gets a new connection.
        assert writer.submit(lambda conn: conn.number).result() == 1
        # While the server refuses connections, writes fail at once, then retry after a
        # short backoff; when it answers again, writes go through.
        opened[1].dead = True
        refuse.set()
        for _ in range(3):
            with pytest.raises(StoreUnavailableError):
                writer.submit(lambda conn: conn.number).result(timeout=5)
        refuse.clear()
        started = time.monotonic()
        assert writer.submit(lambda conn: conn.number).result(timeout=5) == 2
        assert time.monotonic() - started < 3
    finally:
        writer.close()
    assert opened[2].closed


# -- PostgreSQL only ---------------------------------------------------------------------


def test_postgres_url_options_are_checked() -> None:
    pytest.importorskip("psycopg")
    for url, match in [
        ("postgresql://u@h/db?schema=Robert';DROP", "schema="),
        ("postgresql://u@h/db?schema=1abc", "schema="),
        ("postgresql://u@h/db?pool_min=x", "pool_min"),
        ("postgresql://u@h/db?pool_min=5&pool_max=2", "pool_min=5"),
        ("postgresql://u:secret@h/db?nonsense=1", "nonsense"),
    ]:
        with pytest.raises(ConfigurationError, match=match) as info:
            open_store(url)
        assert "secret" not in str(info.value)


def test_postgres_unreachable_server_is_unavailable() -> None:
    psycopg = pytest.importorskip("psycopg")
    with pytest.raises(StoreUnavailableError) as info:
        open_store("postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


@pytest.mark.postgres
def test_postgres_migrations_apply_once_when_many_start_together(postgres_url: str) -> None:

    stores = [open_store(postgres_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def migrate(store: Store) -> None:
        barrier.wait()
        try:
            store.migrate()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(store,)) for store in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        stores[0].migrate()  # idempotent
        stores[0].create_workflow(new("a"), None, None).result()
        assert [r.id for r in stores[3].list_workflows()] == ["a"]
    finally:
        for store in stores:
            store.close()
    versions = [version for version, _ in migrations("postgres")]
    assert versions[0] == 1 and versions == sorted(set(versions)), versions
    schema = schema_of(postgres_url)
    with admin_connection(postgres_url, schema) as conn:
        applied = conn.execute("SELECT version FROM perdure_schema ORDER BY version").fetchall()
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,)
        ).fetchall()
    assert applied == [(v,) for v in versions]
    assert [t for (t,) in tables] == [
        "perdure_breakers",
        "perdure_events",
        "perdure_executors",
        "perdure_maintenance_leases",
        "perdure_messages",
        "perdure_operator_actions",
        "perdure_queues",
        "perdure_schedules",
        "perdure_schema",
        "perdure_steps",
        "perdure_streams",
        "perdure_workflow_subjects",
        "perdure_workflows",
    ]


@pytest.mark.postgres
def test_postgres_stores_in_other_schemas_do_not_see_each_other(postgres_url: str) -> None:
    other_url = with_options(postgres_url, schema=schema_of(postgres_url) + "_other")
    first, second = open_store(postgres_url), open_store(other_url)
    try:
        first.migrate()
        second.migrate()
        first.create_workflow(new("a"), None, None).result()
        assert second.get_workflow("a") is None and first.get_workflow("a") is not None
    finally:
        first.close()
        second.close()
        with admin_connection(postgres_url) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema_of(other_url)} CASCADE")


@pytest.mark.postgres
def test_postgres_concurrent_claims_never_overlap(postgres_url: str) -> None:
    stores = [open_store(postgres_url) for _ in range(4)]
    try:
        stores[0].migrate()
        futures = [
            stores[0].create_workflow(new(f"w{i:03d}", at=float(i)), None, None) for i in range(200)
        ]
        for future in futures:
            future.result()
        claimed: dict[str, list[str]] = {f"exec-{n}": [] for n in range(len(stores))}
        barrier = threading.Barrier(len(stores))

        def claim(executor: str, store: Store) -> None:
            barrier.wait()
            while batch := store.claim_workflows(
                executor, ["checkout"], "1", 100.0, 115.0, limit=7
            ):
                claimed[executor].extend(r.id for r in batch)

        threads = [
            threading.Thread(target=claim, args=(executor, store))
            for executor, store in zip(claimed, stores, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [wid for ids in claimed.values() for wid in ids]
        assert sorted(every) == [f"w{i:03d}" for i in range(200)]  # each exactly once
        owners = {r.id: r.owner for r in stores[0].list_workflows(limit=1000)}
        assert all(owners[wid] == executor for executor, ids in claimed.items() for wid in ids)
    finally:
        for store in stores:
            store.close()


@pytest.mark.postgres
def test_postgres_writer_reconnects_after_its_connection_is_killed(postgres_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.create_workflow(new("a"), "exec-1", 500.0).result()
        lease = Lease("exec-1", 1)
        writer: Any = store._writer  # type: ignore[attr-defined]
        pid = writer.submit(lambda conn: conn.info.backend_pid).result()
        with psycopg.connect(server_url(postgres_url), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'perdure-writer' AND pid = %s",
                (pid,),
            ).fetchall()
            assert killed == [(True,)]
            deadline = time.monotonic() + 10
            while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchall():
                assert time.monotonic() < deadline, "the writer's backend did not exit"
                time.sleep(0.01)
        # The next write either fails as unavailable (nothing else leaks out), or, when the
        # writer saw beforehand that the server closed its connection, already runs on a
        # new one ...
        try:
            assert store.record_step("a", lease, step("0")).result(timeout=10)
        except StoreUnavailableError as exc:
            assert isinstance(exc.__cause__, psycopg.OperationalError)
            assert store.record_step("a", lease, step("0")).result(timeout=10)
        # ... and the following ones run on the new connection.
        assert store.record_step("a", lease, step("1")).result(timeout=10)
        assert writer.submit(lambda conn: conn.info.backend_pid).result() != pid
        assert [s.position for s in store.load_steps("a")] == ["0", "1"]
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_writes_on_a_dead_connection_fail_as_unavailable(postgres_url: str) -> None:
    """A connection that dies during a batch fails that batch's writes, each with
    StoreUnavailableError chained to psycopg's error; the writer then reconnects."""
    psycopg = pytest.importorskip("psycopg")
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.create_workflow(new("a"), "exec-1", 500.0).result()
        lease = Lease("exec-1", 1)
        writer: Any = store._writer  # type: ignore[attr-defined]
        busy, gate = threading.Event(), threading.Event()

        def die_mid_batch(conn: Any) -> None:
            with psycopg.connect(server_url(postgres_url), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            conn.execute("SELECT pg_sleep(1)").fetchall()

        # Hold the connection in one batch (led by another thread) while the next one
        # (killer and steps) queues up for the writer thread.
        blockers: list[Any] = []
        leader = threading.Thread(
            target=lambda: blockers.append(writer.submit(lambda conn: busy.set() or gate.wait(10)))
        )
        leader.start()
        assert busy.wait(10)
        killer = writer.submit(die_mid_batch)
        steps = [store.record_step("a", lease, step(str(i))) for i in range(3)]
        gate.set()
        leader.join(10)
        assert blockers[0].result(timeout=10)
        for future in [killer, *steps]:
            with pytest.raises(StoreUnavailableError) as info:
                future.result(timeout=10)
            assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert store.record_step("a", lease, step("0")).result(timeout=10)
        assert [s.position for s in store.load_steps("a")] == ["0"]
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_reads_survive_a_restarted_server(postgres_url: str) -> None:
    """Pooled connections that died while idle are replaced, not handed to a caller."""
    psycopg = pytest.importorskip("psycopg")
    store = open_store(with_options(postgres_url, pool_min="2", pool_max="2"))
    try:
        store.migrate()
        store.create_workflow(new("a"), None, None).result()
        pool: Any = store._pool  # type: ignore[attr-defined]
        with pool.connection() as first, pool.connection() as second:
            pids = [first.info.backend_pid, second.info.backend_pid]
        with psycopg.connect(server_url(postgres_url), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'perdure' AND pid = ANY(%s)",
                (pids,),
            ).fetchall()
        assert killed == [(True,), (True,)]
        for _ in range(5):
            assert store.get_workflow("a") is not None
        assert store.claim_workflows("me", ["checkout"], "1", 100.0, 115.0)
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_step_racing_a_takeover_is_fenced(postgres_url: str) -> None:
    """A stale owner's step that meets a claim in progress is checked against the claim's
    outcome, not against the row as it was before."""
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.create_workflow(new("a"), "old", 50.0).result()
        with admin_connection(postgres_url, schema_of(postgres_url)) as claimer:
            # A claim in progress: the row is locked and updated, not committed yet.
            with claimer.transaction():
                claimer.execute("SELECT 1 FROM perdure_workflows WHERE id = 'a' FOR UPDATE")
                claimer.execute(
                    "UPDATE perdure_workflows SET owner = 'new', epoch = epoch + 1 WHERE id = 'a'"
                )
                # From another thread: an idle writer lets the caller commit in its own
                # thread, which here would wait for this very transaction.
                submitted: list[Any] = []
                thread = threading.Thread(
                    target=lambda: submitted.append(
                        store.record_step("a", Lease("old", 1), step("0"))
                    )
                )
                thread.start()
                thread.join(0.2)
                assert not submitted or not submitted[0].done(), "the step must wait"
            thread.join(10)
            assert submitted[0].result(timeout=10) is False
        assert store.load_steps("a") == []
        assert store.record_step("a", Lease("new", 2), step("0")).result()
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_heartbeat_writes_no_workflow_row_and_waits_for_none(postgres_url: str) -> None:
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.register_executor(ExecutorRecord("me", "host", 1, "1", 1.0, 1.0, 16.0, None))
        store.create_workflow(new("a"), "me", HELD_BY_EXECUTOR).result()
        store.create_workflow(new("b"), "me", HELD_BY_EXECUTOR).result()
        with admin_connection(postgres_url, schema_of(postgres_url)) as admin:
            versions = "SELECT id, xmin::text FROM perdure_workflows ORDER BY id"
            before = admin.execute(versions).fetchall()
            with admin.transaction():
                # Writes holding the workflows' rows (a step being recorded, a completion,
                # a message waking one) do not hold the heartbeat up: it writes none of them.
                admin.execute("SELECT 1 FROM perdure_workflows WHERE id = 'a' FOR KEY SHARE")
                admin.execute("UPDATE perdure_workflows SET note = 'x' WHERE id = 'b'")
                assert store.heartbeat("me", 10.0, 99.0) == {"a", "b"}
            admin.execute("UPDATE perdure_workflows SET note = NULL WHERE id = 'b'")
            after = admin.execute(versions).fetchall()
            assert after[0] == before[0]  # a: not a new row version
            (me,) = store.list_executors()
            assert me.lease_expires_at == 99.0
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_release_of_a_lapsed_executor_and_its_heartbeat_do_not_cross(
    postgres_url: str,
) -> None:
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.register_executor(ExecutorRecord("them", "host", 1, "1", 1.0, 1.0, 16.0, None))
        store.create_workflow(new("a"), "them", HELD_BY_EXECUTOR).result()
        with admin_connection(postgres_url, schema_of(postgres_url)) as them:
            with them.transaction():
                # Its heartbeat under way (the row locked, not committed): the release
                # skips it this round rather than wait, or release what it renews.
                them.execute("UPDATE perdure_executors SET heartbeat_at = 17 WHERE id = 'them'")
                assert store.release_expired("them", 20.0) is None
            assert store.release_expired("them", 20.0) == 1
            # Frozen inside a transaction holding a workflow's row (a step record's fence):
            # that row is not waited for, and stays its own until the lock is gone.
            store.create_workflow(new("b"), "them", HELD_BY_EXECUTOR).result()
            store.create_workflow(new("c"), "them", HELD_BY_EXECUTOR).result()
            store.heartbeat("them", 17.0, 19.0)  # running again (released above)
            with them.transaction():
                them.execute("SELECT 1 FROM perdure_workflows WHERE id = 'b' FOR KEY SHARE")
                assert store.release_expired("them", 20.0) == 1  # c
                assert [e.id for e in store.list_executors()] == ["them"]  # b is still its
            assert store.release_expired("them", 20.0) == 1  # b
            assert store.list_executors() == []
            # A heartbeat sent while a release holds the row waits for it, then finds
            # its workflows gone (the release's own statements, by hand).
            them.execute("UPDATE perdure_workflows SET owner = 'them' WHERE id = 'a'")
            renewed: list[set[str]] = []
            beat = threading.Thread(
                target=lambda: renewed.append(store.heartbeat("them", 21.0, 36.0))
            )
            with them.transaction():
                them.execute("SELECT 1 FROM perdure_executors WHERE id = 'them' FOR UPDATE")
                them.execute("UPDATE perdure_workflows SET owner = NULL WHERE id = 'a'")
                beat.start()
                beat.join(0.5)
                assert beat.is_alive()  # waiting for the lock
            beat.join(10)
            assert renewed == [set()]
    finally:
        store.close()


def _flights(trace: Any) -> list[list[str]]:
    """The statements the writer executed between two waits for the server (Sync), by their
    first word, from libpq's protocol trace: each Bind names the statement it runs, the
    unnamed one parsed just before it or one prepared earlier (a lone statement of the hot
    path goes as a prepared statement: ``_pg_prepared``). The round trip that prepares
    one, once per connection, is ``["PREPARE"]``, then ``["DESCRIBE"]`` (its parameters'
    types, read once)."""
    sent = [line.split("\t") for line in trace.read_text().splitlines() if line.startswith("F")]
    flights: list[list[str]] = [[]]
    parsed: dict[str, str] = {}
    for fields in sent:
        kind, text = fields[2].split()[0], " ".join(fields[3:])
        if kind == "Sync":
            flights.append([])
        elif kind == "Parse":
            quoted = text.split('"')
            parsed[quoted[1]] = quoted[3].split()[0]
            if quoted[1]:
                flights[-1].append("PREPARE")
        elif kind == "Describe" and text.split()[0] == "S":
            flights[-1].append("DESCRIBE")  # the prepared statement's parameter types
        elif kind == "Bind":
            flights[-1].append(parsed[text.split('"')[3]])
    return flights


def _executions(trace: Any) -> list[int]:
    """How many statements the writer executed between two waits for the server (Sync)."""
    sent = [line.split("\t") for line in trace.read_text().splitlines() if line.startswith("F")]
    counts = [0]
    for fields in sent:
        kind = fields[2].split()[0]
        if kind == "Sync":
            counts.append(0)
        elif kind == "Execute":
            counts[-1] += 1
    return counts


@contextlib.contextmanager
def _traced_writer(store: Any, trace: Any, name: str = "_writer") -> Iterator[Any]:
    psycopg = pytest.importorskip("psycopg")
    writer: Any = getattr(store, name)
    # Every statement parsed where it is sent (none prepared after a few runs, which
    # would leave it out of the flights read from the trace).
    writer.submit(lambda conn: setattr(conn, "prepare_threshold", None)).result()
    with trace.open("w") as out:
        flags = psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE
        writer.submit(lambda conn: conn.pgconn.trace(out.fileno())).result()
        writer.submit(lambda conn: conn.pgconn.set_trace_flags(flags)).result()
        yield writer
        writer.submit(lambda conn: conn.pgconn.untrace()).result()


@pytest.mark.postgres
def test_postgres_a_lone_step_is_one_statement_in_one_round_trip(
    postgres_url: str, tmp_path: Any
) -> None:
    """The hot path on PostgreSQL: a step recorded alone is its one statement, sent in
    autocommit (its own transaction): no BEGIN, no COMMIT, one wait for the server."""
    store = open_store(postgres_url)
    trace = tmp_path / "trace.txt"
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        with _traced_writer(store, trace):
            assert store.record_step("a", Lease("me", 1), step("0")).result()
            # Still fenced by its own WHERE.
            assert not store.record_step("a", Lease("me", 2), step("1")).result()
        assert [s.position for s in store.load_steps("a")] == ["0"]
    finally:
        store.close()
    flights = _flights(trace)
    assert [f for f in flights if "INSERT" in f] == [["INSERT"], ["INSERT"]], flights
    # Prepared (and described) once on the writer's connection, before the first; the
    # second runs it again.
    assert flights.count(["PREPARE"]) == flights.count(["DESCRIBE"]) == 1, flights


def test_sqlite_a_lone_write_is_its_statement_alone(tmp_path: Any) -> None:
    """On SQLite, a start, a step record and an outcome written alone are each one
    statement in autocommit (its own IMMEDIATE-like transaction, no BEGIN or COMMIT
    statements); writes that queue together still share one BEGIN IMMEDIATE ... COMMIT."""
    store = open_store(f"sqlite:///{tmp_path / 'lone.db'}")
    sent: list[str] = []
    try:
        store.migrate()
        writer: Any = store._writer  # type: ignore[attr-defined]
        writer.submit(lambda conn: conn.set_trace_callback(sent.append)).result()
        store.create_workflow(new("a"), "me", 500.0).result()
        assert store.record_step("a", Lease("me", 1), step("0")).result()
        assert not store.record_step("a", Lease("me", 2), step("1")).result()  # still fenced
        assert store.complete_workflow("a", Lease("me", 1), "SUCCEEDED", "1", None, 2.0).result()
        alone = [line.split()[0] for line in sent]
        sent.clear()
        with _one_batch(store):
            both = [store.record_step("a", Lease("me", 1), step(p)) for p in ("2", "3")]
        assert [future.result(timeout=10) for future in both] == [False, False]  # finished
        writer.submit(lambda conn: conn.set_trace_callback(None)).result()
    finally:
        store.close()
    # (The first COMMIT ends the transaction that set the trace.)
    assert alone == ["COMMIT", "INSERT", "INSERT", "INSERT", "UPDATE"], alone
    batched = " ".join(line.split()[0] for line in sent)
    assert "BEGIN INSERT INSERT COMMIT" in batched, sent


@pytest.mark.postgres
def test_postgres_a_lone_completion_and_its_event_are_one_statement_in_one_round_trip(
    postgres_url: str, tmp_path: Any
) -> None:
    """A workflow's outcome (without a parent to tell) and its DONE event are one
    statement in autocommit; a completion the lease refuses pushes no event."""
    store = open_store(postgres_url)
    trace = tmp_path / "trace.txt"
    try:
        store.migrate()
        events = _listening(store)
        store.create_workflow(new("a"), "me", 500.0).result()
        store.create_workflow(new("b"), "me", 500.0).result()
        store.watch_workflows(["a", "b"])  # waited for elsewhere: their ends are pushed
        with _traced_writer(store, trace):
            assert not store.complete_workflow(
                "b", Lease("me", 2), "FAILED", None, "{}", 1.0
            ).result()
            assert store.complete_workflow(
                "a", Lease("me", 1), "SUCCEEDED", "1", None, 2.0
            ).result()
        record = store.get_workflow("a")
        assert record is not None and (record.status, record.output) == ("SUCCEEDED", "1")
        _heard(events, pushed=["a"], not_pushed=["b"])
    finally:
        store.close()
    flights = _flights(trace)
    assert [f for f in flights if "WITH" in f] == [["WITH"], ["WITH"]], flights


def _listening(store: Any) -> list[str]:
    """The events pushed to ``store``'s listener from now on."""
    events: list[str] = []
    assert store.listen(events.append)
    deadline = time.monotonic() + 10
    while "probe" not in events and time.monotonic() < deadline:
        # The listener connects in the background: until it listens, events are lost.
        store._writer.submit(lambda conn: store._notify(conn, "probe")).result()
        time.sleep(0.05)
    return events


def _heard(events: list[str], pushed: list[str], not_pushed: list[str]) -> None:
    """The DONE events of ``pushed`` arrive, and none of ``not_pushed``."""
    deadline = time.monotonic() + 10
    while not all(EVENT_DONE + i in events for i in pushed) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(EVENT_DONE + i in events for i in pushed), events
    time.sleep(0.2)
    assert not any(EVENT_DONE + i in events for i in not_pushed), events


@pytest.mark.postgres
def test_postgres_a_batch_of_steps_is_one_statement_in_one_round_trip(
    postgres_url: str, tmp_path: Any
) -> None:
    """Steps that queued together are one statement (their parameters one JSON array:
    _pg_rows), atomic by itself, so sent in autocommit: one round trip, no BEGIN or
    COMMIT; with outcomes among them, one statement too (STEPS_AND_OUTCOMES_JSON). With a
    write of another kind among them, the batch is one transaction: BEGIN, their
    statements and COMMIT leave in one flight, answered by one Sync (no second, empty,
    round trip)."""
    store = open_store(postgres_url)
    trace = tmp_path / "trace.txt"
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        store.create_workflow(new("b"), "me", 500.0).result()
        with _traced_writer(store, trace):
            with _one_batch(store):
                steps = [store.record_step("a", Lease("me", 1), step(str(i))) for i in range(3)]
            assert all(future.result(timeout=10) for future in steps)
            with _one_batch(store):
                mixed = [store.record_step("a", Lease("me", 1), step(str(i))) for i in (3, 4)]
                mixed.append(
                    store.complete_workflow("b", Lease("me", 1), "SUCCEEDED", "1", None, 2.0)
                )
            assert all(future.result(timeout=10) for future in mixed)
            with _one_batch(store):
                other = [store.record_step("a", Lease("me", 1), step("5"))]
                other.append(store._writer.submit(lambda conn: conn.execute("SELECT 1")))
            assert all(future.result(timeout=10) for future in other)
        assert [s.position for s in store.load_steps("a")] == ["0", "1", "2", "3", "4", "5"]
    finally:
        store.close()
    flights = _flights(trace)
    writes = [i for i, f in enumerate(flights) if "INSERT" in f or "WITH" in f]
    assert [flights[i] for i in writes] == [
        ["INSERT"],
        ["WITH"],
        ["BEGIN", "INSERT", "SELECT", "COMMIT"],
    ], flights
    executed = _executions(trace)
    assert [executed[i] for i in writes] == [1, 1, 4], executed
    # Every wait for the server answered statements: none was an empty round trip.
    assert [] not in flights[1:-1], flights


@contextlib.contextmanager
def _one_batch(store: Any, name: str = "_writer") -> Iterator[None]:
    """The writes submitted inside queue up while another thread holds the writer's
    connection (or the starter's: ``name``), so that they go out together, as one
    batch, once the block ends."""
    writer: Any = getattr(store, name)
    busy, gate = threading.Event(), threading.Event()
    leader = threading.Thread(
        target=lambda: writer.submit(lambda conn: busy.set() or gate.wait(10)).result()
    )
    leader.start()
    assert busy.wait(10)
    try:
        yield
    finally:
        gate.set()
        leader.join(10)


@pytest.mark.postgres
def test_postgres_step_records_sent_together_keep_their_own_fences(postgres_url: str) -> None:
    """Step records of one batch go as one statement (_pg_rows), yet each is still fenced
    on its own with its own answer: a record under a stale lease is refused while its
    neighbours, of this and of another workflow, are written."""
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        store.create_workflow(new("b"), "me", 500.0).result()
        with _one_batch(store):
            steps = [
                store.record_step("a", Lease("me", 1), step("0")),
                store.record_step("a", Lease("me", 2), step("1")),  # a stale fence: refused
                store.record_step("b", Lease("me", 1), step("0")),
                store.record_step("a", Lease("other", 1), step("2")),  # not the owner: refused
            ]
        assert [future.result(timeout=10) for future in steps] == [True, False, True, False]
        assert [s.position for s in store.load_steps("a")] == ["0"]
        assert [s.position for s in store.load_steps("b")] == ["0"]
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_a_record_queued_after_its_runs_side_effect_is_listed_after_it(
    postgres_url: str,
) -> None:
    """A run's side effect that records a step with a statement of its own (set_event),
    then the run's next step record, in one batch after another workflow's record: the
    records that go together as one statement go where the last of them stood, so the
    run's steps are listed (and a fork copies them) in the order it wrote them. (Where
    the first stood, the run's record was written before the side effect's.)"""
    store = open_store(postgres_url)
    lease = Lease("me", 1)
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        store.create_workflow(new("b"), "me", 500.0).result()
        with _one_batch(store):
            writes = [
                store.record_step("b", lease, step("0")),
                store.set_event("a", lease, step("0"), "state"),
                store.record_step("a", lease, step("1")),
            ]
        assert [future.result(timeout=10) for future in writes] == [True, True, True]
        assert [s.position for s in store.load_steps("a")] == ["0", "1"]
        assert store.get_event("a", "state") == '{"ok":true}'
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_step_records_sent_together_are_stored_as_given(postgres_url: str) -> None:
    """What goes through the JSON array of a batch of step records comes back unchanged:
    text with quotes, backslashes, escapes and non-ASCII, absent values, and times to the
    last bit of their float."""
    store = open_store(postgres_url)
    lease = Lease("me", 1)
    odd = json.dumps({"text": 'a "quoted" \\ back\u0001slash \n été 🎉', "n": [1.5e300, -0.0]})
    records = [
        StepRecord("0", "s", "SUCCEEDED", odd, None, 1, None, 0.1 + 0.2, 1733344123.4567891),
        StepRecord("1", "naïve step", "RETRYING", None, '{"m": "x"}', 3, 2e9 / 3, 1 / 3, None),
        StepRecord("2", "s", "SUCCEEDED", '"\\u0000 is text here"', None, 1, None, 5.0, 4.0),
    ]
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        with _one_batch(store):
            futures = [store.record_step("a", lease, record) for record in records]
        assert [future.result(timeout=10) for future in futures] == [True, True, True]
        assert store.load_steps("a") == records
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_two_records_of_one_step_in_a_batch_are_answered_as_alone(
    postgres_url: str,
) -> None:
    """Two records of one step in one batch cannot be one statement (PostgreSQL refuses to
    upsert a row twice): the batch is run again write by write, and each is answered as
    it would be alone (the second finds a final record and is refused), its neighbour
    written."""
    store = open_store(postgres_url)
    lease = Lease("me", 1)
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        with _one_batch(store):
            futures = [
                store.record_step("a", lease, step("0")),
                store.record_step("a", lease, step("0", attempts=2)),
                store.record_step("a", lease, step("1")),
            ]
        assert [future.result(timeout=10) for future in futures] == [True, False, True]
        assert [(s.position, s.attempts) for s in store.load_steps("a")] == [("0", 1), ("1", 1)]
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_starts_of_one_batch_are_one_statement(postgres_url: str, tmp_path: Any) -> None:
    """Workflows started at once go as one INSERT in autocommit, one round trip (not
    one per start to read whether it inserted); a start whose ID is taken
    gets the workflow that holds it, a second start of one ID the first one's, and
    their neighbours are created."""
    store = open_store(postgres_url)
    trace = tmp_path / "trace.txt"
    try:
        store.migrate()
        taken, _ = store.create_workflow(new("taken", name="other"), None, None).result()
        with _traced_writer(store, trace, "_starter"):
            with _one_batch(store, "_starter"):
                starts = [
                    store.create_workflow(new("a"), "me", 500.0),
                    store.create_workflow(new("b", at=101.5), "me", 500.0),
                    store.create_workflow(new("taken"), "me", 500.0),
                ]
            results = [future.result(timeout=10) for future in starts]
        with _one_batch(store, "_starter"):
            twice = [
                store.create_workflow(new("c"), "me", 500.0),
                store.create_workflow(new("c", name="other"), "me", 500.0),
            ]
        first, second = (future.result(timeout=10) for future in twice)
    finally:
        store.close()
    assert [created for _, created in results] == [True, True, False]
    assert results[2][0] == taken
    assert [(r.id, r.status, r.owner, r.epoch) for r, _ in results[:2]] == [
        ("a", "RUNNING", "me", 1),
        ("b", "RUNNING", "me", 1),
    ]
    assert results[1][0].created_at == 101.5
    assert first[1] and not second[1] and second[0].name == "checkout"
    flights = _flights(trace)
    # One statement, atomic by itself: in autocommit, without BEGIN and COMMIT.
    assert [f for f in flights if "INSERT" in f] == [["INSERT"]], flights
    executed = _executions(trace)
    assert executed[[i for i, f in enumerate(flights) if "INSERT" in f][0]] == 1, executed
    assert [] not in flights[1:-1], flights


@pytest.mark.postgres
def test_postgres_unowned_starts_push_ready_in_their_one_statement(
    postgres_url: str, tmp_path: Any
) -> None:
    """Starts that no executor owns yet (a client's) tell the executors in the statement
    that inserts them: alone, one statement in autocommit; at once, one statement for the
    batch. Each READY event goes out only with a row inserted (a start whose ID is taken
    pushes nothing), and the workflows are stored PENDING, unowned."""
    store = open_store(postgres_url)
    trace = tmp_path / "trace.txt"
    try:
        store.migrate()
        events = _listening(store)
        taken, _ = store.create_workflow(new("taken", name="other"), "me", 500.0).result()
        with _traced_writer(store, trace, "_starter"):
            events.clear()
            assert store.create_workflow(new("taken"), None, None).result()[1] is False
            time.sleep(0.3)  # what a push would take to arrive
            refused = list(events)
            alone, alone_created = store.create_workflow(new("alone"), None, None).result()
            with _one_batch(store, "_starter"):
                starts = [store.create_workflow(new(i), None, None) for i in ("a", "b", "taken")]
            results = [future.result(timeout=10) for future in starts]
        deadline = time.monotonic() + 10
        while events.count(EVENT_READY) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        stored = [store.get_workflow(i) for i in ("alone", "a", "b")]
    finally:
        store.close()
    assert refused == []
    assert alone_created and alone.owner is None and alone.status == "PENDING"
    assert [created for _, created in results] == [True, True, False]
    assert results[2][0] == taken
    assert [(r.id, r.status, r.owner) for r in stored if r is not None] == [
        ("alone", "PENDING", None),
        ("a", "PENDING", None),
        ("b", "PENDING", None),
    ]
    # One push per transaction: the lone start's and the batch's (PostgreSQL folds the
    # batch's identical events into one).
    assert events.count(EVENT_READY) == 2, events
    flights = _flights(trace)
    inserts = [f for f in flights if "WITH" in f]  # WITH ins AS (INSERT ...) SELECT pg_notify
    assert inserts == [["WITH"], ["WITH"], ["WITH"]], flights
    executed = _executions(trace)
    assert [executed[i] for i, f in enumerate(flights) if "WITH" in f] == [1, 1, 1], executed


@pytest.mark.postgres
def test_postgres_completions_sent_together_keep_their_own_fences(postgres_url: str) -> None:
    """Outcomes of one batch go as one statement (_pg_rows), each still fenced on its own:
    one under a stale lease is refused (and pushes no DONE event) while its neighbours
    are recorded and pushed."""
    store = open_store(postgres_url)
    try:
        store.migrate()
        events = _listening(store)
        for workflow_id in ("a", "b", "c"):
            store.create_workflow(new(workflow_id), "me", 500.0).result()
        store.watch_workflows(["a", "b", "c"])  # waited for elsewhere: their ends are pushed
        with _one_batch(store):
            done = [
                store.complete_workflow("a", Lease("me", 1), "SUCCEEDED", "1", None, 10.0),
                store.complete_workflow("b", Lease("me", 2), "SUCCEEDED", "2", None, 10.0),
                store.complete_workflow("c", Lease("me", 1), "FAILED", None, '{"e": 1}', 10.0),
            ]
        assert [future.result(timeout=10) for future in done] == [True, False, True]
        statuses = {i: store.get_workflow(i).status for i in ("a", "b", "c")}  # type: ignore[union-attr]
        assert statuses == {"a": "SUCCEEDED", "b": "RUNNING", "c": "FAILED"}
        assert store.get_workflow("c").error == '{"e": 1}'  # type: ignore[union-attr]
        assert store.get_workflow("a").finished_at == 10.0  # type: ignore[union-attr]
        _heard(events, pushed=["a", "c"], not_pushed=["b"])
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_a_lone_step_lost_with_its_connection_fails_as_unavailable(
    postgres_url: str,
) -> None:
    """A lone step record (one statement in autocommit) whose connection dies before the
    server answered is neither a success nor a refusal: StoreUnavailableError, as a batch
    lost at COMMIT (it may have committed); the next write runs on a new connection."""
    psycopg = pytest.importorskip("psycopg")
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        writer: Any = store._writer  # type: ignore[attr-defined]
        pid = writer.submit(lambda conn: conn.info.backend_pid).result()
        lease = Lease("me", 1)
        # The record's fence takes a KEY SHARE lock on the workflow's row: hold a
        # conflicting lock, so that the statement waits in the server.
        with (
            admin_connection(postgres_url, schema_of(postgres_url)) as admin,
            admin.transaction(),
        ):
            admin.execute("SELECT 1 FROM perdure_workflows WHERE id = 'a' FOR UPDATE")
            outcome: list[Any] = []
            recorder = threading.Thread(
                target=lambda: outcome.append(store.record_step("a", lease, step("0")))
            )
            recorder.start()
            deadline = time.monotonic() + 10
            while not admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (pid,),
            ).fetchall():
                assert time.monotonic() < deadline, "the step's statement did not wait"
                time.sleep(0.01)
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            recorder.join(10)
        with pytest.raises(StoreUnavailableError) as info:
            outcome[0].result(timeout=10)
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert store.load_steps("a") == []
        assert store.record_step("a", lease, step("0")).result(timeout=10)
        assert [s.position for s in store.load_steps("a")] == ["0"]
    finally:
        store.close()
