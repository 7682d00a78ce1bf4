"""The storage contract, run against every store (the conformance suite), and migrations."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

import pytest

from perdure import StoreError
from perdure.storage import (
    ExecutorRecord,
    Lease,
    NewWorkflow,
    StepRecord,
    Store,
    open_store,
)
from perdure.storage._sqlite import list_query, migrations, split_statements


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
    assert store.heartbeat("me", 10.0, 25.0) == 2
    record = store.get_workflow("a")
    assert record is not None and record.lease_expires_at == 25.0
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
    with pytest.raises(StoreError, match="no such table"):
        bad.result()
    assert len(store.load_steps("a")) == 200


def test_store_errors_are_translated(store: Store) -> None:
    future = store._writer.submit(lambda conn: conn.execute("SELECT * FROM nowhere"))  # type: ignore[attr-defined]
    with pytest.raises(StoreError) as info:
        future.result()
    assert not isinstance(info.value, sqlite3.Error)


def schema(path: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
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
    versions = [version for version, _ in migrations()]
    assert versions == list(range(1, len(versions) + 1)), "migrations are numbered 1, 2, 3 ..."
    for old_version in range(0, len(versions)):
        old = tmp_path / f"v{old_version}.db"
        with sqlite3.connect(old) as conn:
            conn.execute("CREATE TABLE perdure_schema (version INTEGER NOT NULL)")
            for version, script in migrations()[:old_version]:
                for statement in split_statements(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO perdure_schema VALUES (?)", (version,))
        upgraded = open_store(f"sqlite:///{old}")
        upgraded.migrate()
        upgraded.close()
        assert schema(str(old)) == schema(str(fresh))


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"status": "RUNNING"},
        {"name": "checkout"},
        {"status": "FAILED", "created_after": 5.0},
        {"name": "checkout", "created_before": 5.0},
        {"created_after": 1.0, "created_before": 5.0},
    ],
)
def test_listing_is_an_index_scan(store: Store, database_url: str, filters: dict) -> None:
    """Listing by status, name and time never scans or sorts the whole table."""
    sql, params = list_query(
        filters.get("status"),
        filters.get("name"),
        filters.get("created_after"),
        filters.get("created_before"),
        50,
        True,
    )
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
        plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "INDEX" in plan and "TEMP B-TREE" not in plan, plan
