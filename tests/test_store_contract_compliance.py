"""The store contract, compliance part (see ``test_store_contract.py``): subject tags,
the maintenance lease, deleting finished trees, erasing a subject, rewriting payloads;
run against every store, reading the tables raw afterwards."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from compliance_helpers import raw_sql
from conftest import admin_connection, schema_of
from store_contract import covers, new, running, step

from perdure._model import ERASED
from perdure.storage import Lease, StepRecord, Store, open_store
from perdure.storage import _statements_compliance as statements
from perdure.storage._dialect import SQLITE

STEPS_SQL = "SELECT workflow_id, position, status FROM perdure_steps ORDER BY 1, 2"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def finished(
    store: Store,
    workflow_id: str,
    at: float,
    status: str = "SUCCEEDED",
    parent_id: str | None = None,
    subjects: tuple[str, ...] = (),
) -> None:
    """A workflow with a step, a message and an event, finished at ``at`` with ``status``."""
    record = new(workflow_id, parent_id=parent_id)
    inputs = json.dumps({"args": [f"{workflow_id}-secret"]})
    record = type(record)(**{**record.__dict__, "subjects": subjects, "inputs": inputs})
    created, ok = store.create_workflow(record, "me", 500.0).result()
    assert ok
    lease = running_lease(created.epoch)
    assert store.record_step(
        workflow_id, lease, step("0", output=f'"{workflow_id}-step-secret"')
    ).result()
    assert store.send_message(workflow_id, "t", f'"{workflow_id}-msg"', None, 10.0).result()
    ev = StepRecord(
        "1", "perdure.set_event", "SUCCEEDED", f'"{workflow_id}-event"', None, 1, None, 11.0
    )
    assert store.set_event(workflow_id, lease, ev, "k").result()
    error = None if status == "SUCCEEDED" else json.dumps({"message": f"{workflow_id}-error"})
    output = f'"{workflow_id}-output"' if status == "SUCCEEDED" else None
    assert store.complete_workflow(workflow_id, lease, status, output, error, at).result()


def running_lease(epoch: int) -> Lease:
    return Lease("me", epoch)


@covers("workflow_subjects", "create_workflow")
def test_subjects_are_tagged_with_the_start(store: Store) -> None:
    record = new("a")
    tagged = type(record)(**{**record.__dict__, "subjects": ("u2", "u1")})
    assert store.create_workflow(tagged, None, None).result()[1]
    assert store.workflow_subjects("a") == ["u1", "u2"]
    # A repeated start tags nothing more.
    again = type(record)(**{**record.__dict__, "subjects": ("u3",)})
    assert not store.create_workflow(again, None, None).result()[1]
    assert store.workflow_subjects("a") == ["u1", "u2"]
    assert store.workflow_subjects("none") == []


@covers("take_lease")
def test_one_holder_of_a_maintenance_lease_at_a_time(store: Store) -> None:
    assert store.take_lease("gc", "w1", 10.0, 20.0)
    assert not store.take_lease("gc", "w2", 15.0, 25.0)
    assert store.take_lease("gc", "w1", 15.0, 25.0)  # renewed by its holder
    assert store.take_lease("other", "w2", 15.0, 25.0)  # another lease
    assert store.take_lease("gc", "w2", 26.0, 36.0)  # expired: taken over
    assert not store.take_lease("gc", "w1", 27.0, 37.0)


@covers("collect_garbage")
def test_garbage_collection_deletes_whole_finished_trees(store: Store, database_url: str) -> None:
    finished(store, "old", 100.0)
    finished(store, "old/0", 90.0, parent_id="old")
    finished(store, "failed", 100.0, "FAILED")
    finished(store, "new", 300.0)
    # A finished root whose child still runs stays whole.
    finished(store, "parent", 100.0)
    running(store, "parent/0", parent_id="parent")
    # An active root is never a candidate.
    running(store, "active")
    # A resumed workflow's action keeps the outcome it replaced: gc erases that copy.
    store.resume_workflow("failed", "alice", 150.0)
    lease = running(store, "resumed-again", at=1.0)
    assert store.complete_workflow("resumed-again", lease, "SUCCEEDED", '"x"', None, 50.0).result()

    dry = store.collect_garbage(["SUCCEEDED", "FAILED"], 200.0, 10, 400.0, "ops", dry_run=True)
    assert sorted(dry) == [["old", "old/0"], ["resumed-again"]]
    assert len(raw_sql(database_url, "SELECT id FROM perdure_workflows")) == 8

    first = store.collect_garbage(["SUCCEEDED", "FAILED"], 200.0, 1, 400.0, "ops")
    assert first == [["resumed-again"]]  # oldest first, one tree per batch
    second = store.collect_garbage(["SUCCEEDED", "FAILED"], 200.0, 10, 400.0, "ops")
    assert second == [["old", "old/0"]]
    assert store.collect_garbage(["SUCCEEDED", "FAILED"], 200.0, 10, 400.0, "ops") == []

    left = sorted(row[0] for row in raw_sql(database_url, "SELECT id FROM perdure_workflows"))
    assert left == ["active", "failed", "new", "parent", "parent/0"]
    for table in ("perdure_steps", "perdure_messages", "perdure_events"):
        owners = {row[0] for row in raw_sql(database_url, f"SELECT workflow_id FROM {table}")}
        assert not owners & {"old", "old/0", "resumed-again"}, table
    # Logged, one gc action per tree.
    gc = [a for a in store.list_actions() if a.action == "gc"]
    assert [(a.workflow_id, json.loads(a.details)["deleted"]) for a in gc] == [
        ("resumed-again", ["resumed-again"]),
        ("old", ["old", "old/0"]),
    ]
    # Only the listed statuses.
    finished(store, "cancelled", 100.0, "CANCELLED")
    assert store.collect_garbage(["SUCCEEDED"], 200.0, 10, 400.0, "ops") == []


@covers("erase_subject")
def test_erasing_a_subject_replaces_every_payload_and_keeps_structure(
    store: Store, database_url: str
) -> None:
    finished(store, "a", 100.0, "FAILED", subjects=("alice",))
    finished(store, "a/0", 90.0, parent_id="a")
    finished(store, "b", 100.0, subjects=("bob",))
    store.resume_workflow("a", "ops", 120.0)
    # Active: refused, nothing changes.
    assert store.erase_subject("alice", "ops", 130.0) == ([], ["a"])
    assert "secret" in str(raw_sql(database_url, "SELECT inputs FROM perdure_workflows"))
    (claimed,) = store.claim_workflows("me", ["checkout"], "1", 131.0, 600.0)
    lease = Lease("me", claimed.epoch)
    assert store.complete_workflow("a", lease, "FAILED", None, '{"m":"a-error2"}', 140.0).result()
    store.fork_workflow("a", new("fork-of-a"), 1, "fork", "ops", 141.0)
    (fork,) = store.claim_workflows("me", ["checkout"], "1", 142.0, 600.0)
    fork_lease = Lease("me", fork.epoch)
    assert store.complete_workflow("fork-of-a", fork_lease, "SUCCEEDED", '"a-fork"', None, 143.0)
    assert store.complete_workflow("fork-of-a", fork_lease, "SUCCEEDED", None, None, 143.0)
    steps_before = raw_sql(database_url, STEPS_SQL)

    erased, active = store.erase_subject("alice", "ops", 150.0)
    assert active == [] and erased == ["a", "a/0", "fork-of-a"]
    rows = raw_sql(database_url, "SELECT id, inputs, output, error FROM perdure_workflows")
    for workflow_id, *payloads in rows:
        if workflow_id in erased:
            assert all(p in (None, ERASED) for p in payloads), workflow_id
    # Every table read raw: no value of the erased workflows is left, bob's are.
    text = str(
        [
            raw_sql(database_url, f"SELECT * FROM {table}")
            for table in (
                "perdure_steps",
                "perdure_messages",
                "perdure_events",
                "perdure_operator_actions",
            )
        ]
    )
    dump = text + str(rows)
    for value in ("a-secret", "a-step-secret", "a-msg", "a-event", "a-error", "a/0-", "a-fork"):
        assert value not in dump, value
    for value in ("b-secret", "b-step-secret", "b-msg", "b-event", "b-output"):
        assert value in dump, value
    # Structure and times stay.
    assert raw_sql(database_url, STEPS_SQL) == (steps_before)
    record = store.get_workflow("a")
    assert record is not None and record.status == "FAILED" and record.finished_at == 140.0
    marks = raw_sql(database_url, "SELECT subject, erased_at FROM perdure_workflow_subjects")
    assert ("alice", 150.0) in marks and ("bob", None) in marks
    erases = [a.workflow_id for a in store.list_actions() if a.action == "erase"]
    assert erases == ["a", "a/0", "fork-of-a"]
    assert store.erase_subject("nobody", "ops", 160.0) == ([], [])


@covers("rewrite_payloads")
def test_rewrite_payloads_passes_every_payload_in_batches(store: Store, database_url: str) -> None:
    for n in range(5):
        finished(store, f"w{n}", 100.0 + n)

    def upper(text: str) -> str | None:
        return text.replace("w", "W") if "w" in text else None

    changed = store.rewrite_payloads(upper, batch=2)
    # Per workflow: inputs, output, two steps (one the event's record), an event, a message.
    assert changed == 5 * 6
    dump = str(
        [
            raw_sql(database_url, f"SELECT * FROM {table}")
            for table in (
                "perdure_workflows",
                "perdure_steps",
                "perdure_messages",
                "perdure_events",
            )
        ]
    )
    payloads = dump.replace("'w", "'")  # the keys (IDs) stay as they were
    assert "-secret" in dump and "w0-" not in payloads and "W0-secret" in dump
    assert store.rewrite_payloads(upper, batch=2) == 0


def test_old_roots_are_found_by_an_index_range(tmp_path: Any) -> None:
    """Each retention batch reads a range of the finished roots' index (by age), not the
    status index over every finished workflow (SQLite's planner has no statistics)."""
    url = f"sqlite:///{tmp_path}/plan.db"
    opened = open_store(url)
    opened.migrate()
    opened.close()
    conn = sqlite3.connect(f"{tmp_path}/plan.db")
    try:
        params = {"ids": '["SUCCEEDED"]', "before": 1.0, "limit": 5}
        plan = conn.execute("EXPLAIN QUERY PLAN " + SQLITE.sql(statements.GC_ROOTS), params)
        details = [row[3] for row in plan.fetchall()]
    finally:
        conn.close()
    assert any("USING INDEX perdure_workflows_finished_roots" in d for d in details), details


@pytest.mark.postgres
def test_postgres_an_erasure_that_deadlocks_with_the_writer_runs_again(postgres_url: str) -> None:
    """An erasure locks a family's rows parent first; the writer completes a child (its
    row) and then delivers to the parent (a key-share lock on the parent's row for the
    message's foreign key). When both meet, PostgreSQL ends the erasure as a deadlock: it
    runs again once the writer committed, instead of failing as an outage."""
    store = open_store(postgres_url)
    try:
        store.migrate()
        finished(store, "a", 100.0, subjects=("alice",))
        finished(store, "a/0", 90.0, parent_id="a")
        outcome: dict[str, Any] = {}

        def erase() -> None:
            try:
                outcome["erased"] = store.erase_subject("alice", "ops", 150.0)
            except Exception as exc:  # noqa: BLE001 - the test reads it
                outcome["error"] = exc

        with admin_connection(postgres_url, schema_of(postgres_url)) as writer:
            # This side waits long before looking for a deadlock: PostgreSQL ends the
            # erasure's transaction, the one that looks first.
            writer.execute("SET deadlock_timeout = '20s'")
            writer.execute("BEGIN")
            writer.execute("UPDATE perdure_workflows SET updated_at = 91.0 WHERE id = 'a/0'")
            thread = threading.Thread(target=erase)
            thread.start()
            deadline = time.monotonic() + 20
            while not _waiting_for_a_lock(writer) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _waiting_for_a_lock(writer), "the erasure never waited for the child's row"
            writer.execute("SELECT 1 FROM perdure_workflows WHERE id = 'a' FOR KEY SHARE")
            writer.execute("COMMIT")
            thread.join(timeout=30)
        assert outcome == {"erased": (["a", "a/0"], [])}, outcome
    finally:
        store.close()


def _waiting_for_a_lock(conn: Any) -> bool:
    """Whether another session waits for a lock this session holds (only those: a test
    of another schema, running beside this one on the same database, may wait for its
    own locks)."""
    row = conn.execute(
        # pg_locks, not pg_stat_activity: the latter is read once per transaction.
        "SELECT count(*) FROM pg_locks "
        "WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
    ).fetchone()
    return bool(row[0])
