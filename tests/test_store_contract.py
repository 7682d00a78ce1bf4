"""The store contract: every operation of ``perdure.storage.Store``, run against every
store (SQLite and PostgreSQL through the ``database_url`` fixture). This file: the
lifecycle, workflows, steps, executors and leases; ``test_store_contract_waiting.py``:
waiting, messages, events, cancellation, continue-as-new, breakers and keys.

Each test asserts what the operation's docstring promises: its return value, its
fencing by lease and epoch, what it changes and what it leaves alone. ``@covers``
registers which operations a test covers; ``test_every_store_operation_has_a_contract_test``
fails when an operation of the ``Store`` ABC has none.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from dataclasses import astuple

import pytest
from compliance_helpers import raw_rows, raw_sql
from store_contract import COVERED, covers, executor, new, running, step

from perdure._errors import ConfigurationError
from perdure._model import Outcome, WorkflowState
from perdure._queue import Enqueue
from perdure.storage import (
    CHILD_TOPIC,
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


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


# -- lifecycle -------------------------------------------------------------------------------


@covers("migrate", "close")
def test_migrate_is_idempotent_and_close_is_idempotent(database_url: str) -> None:
    first = open_store(database_url)
    first.migrate()
    first.migrate()
    first.create_workflow(new("a"), None, None).result()
    first.close()
    first.close()  # idempotent
    # A closed store's data stays; a new store on the same database sees it.
    second = open_store(database_url)
    try:
        second.migrate()
        record = second.get_workflow("a")
        assert record is not None and record.status == "PENDING"
    finally:
        second.close()


@covers("exists")
def test_exists_and_opening_without_creating(database_url: str) -> None:
    # Nothing there yet: refused without creating it (no file, no schema).
    with pytest.raises(ConfigurationError, match="no database at|no perdure schema"):
        open_store(database_url, create=False)
    opened = open_store(database_url)
    try:
        assert not opened.exists()  # opened (a SQLite file now exists), not migrated
        with pytest.raises(ConfigurationError, match="no perdure schema"):
            open_store(database_url, create=False)
        opened.migrate()
        assert opened.exists()
    finally:
        opened.close()
    existing = open_store(database_url, create=False)
    try:
        assert existing.exists()
        existing.create_workflow(new("a"), None, None).result()
        assert existing.get_workflow("a") is not None
    finally:
        existing.close()


@covers("close")
def test_close_finishes_pending_writes(database_url: str) -> None:
    opened = open_store(database_url)
    opened.migrate()
    futures = [opened.create_workflow(new(f"w{i}"), None, None) for i in range(50)]
    opened.close()
    assert all(future.result(timeout=10)[1] for future in futures)
    again = open_store(database_url)
    try:
        assert len(again.list_workflows(limit=100)) == 50
    finally:
        again.close()


@covers("listen")
def test_listen_pushes_events_or_says_it_cannot(store: Store) -> None:
    seen: list[str] = []
    arrived = threading.Event()

    def on_event(event: str) -> None:
        seen.append(event)
        if event.startswith(EVENT_DONE):
            arrived.set()

    if not store.listen(on_event):
        assert store.kind == "sqlite"  # it polls instead
        return
    lease = running(store, "a")
    # Events that arrive while the listener connects are lost by design (it then says
    # "resync"): wait until it listens.
    deadline = threading.Event()
    for _ in range(100):
        if EVENT_READY in seen:
            break
        deadline.wait(0.05)
    assert store.watch_workflows(["a"])["a"].status == "RUNNING"  # waited for elsewhere
    assert store.complete_workflow("a", lease, "SUCCEEDED", "1", None, 300.0).result()
    assert arrived.wait(10), seen
    assert EVENT_DONE + "a" in seen


# -- workflows -------------------------------------------------------------------------------


@covers("create_workflow", "get_workflow")
def test_create_is_idempotent_and_returns_the_stored_record(store: Store) -> None:
    record, created = store.create_workflow(new("a", deadline_at=900.0), "me", 500.0).result()
    assert created
    assert (record.id, record.name, record.status, record.owner, record.epoch) == (
        "a",
        "checkout",
        "RUNNING",
        "me",
        1,
    )
    assert (record.lease_expires_at, record.created_at, record.deadline_at) == (
        500.0,
        100.0,
        900.0,
    )
    assert record.status == WorkflowState.RUNNING
    # The same ID again: nothing changes, the existing record comes back.
    again, created = store.create_workflow(new("a", name="other", at=5.0), None, None).result()
    assert not created and again == record == store.get_workflow("a")
    pending, created = store.create_workflow(new("b", parent_id="a"), None, None).result()
    assert created
    assert (pending.status, pending.owner, pending.epoch, pending.parent_id) == (
        "PENDING",
        None,
        0,
        "a",
    )
    assert store.get_workflow("missing") is None


@covers("create_workflow", "get_workflow")
def test_a_created_record_is_the_stored_one_field_for_field(store: Store) -> None:
    # The store builds a new workflow's record without reading the row back: every field,
    # and its type (times given as int are stored as floats), must be what a read gives.
    started = NewWorkflow("t", "checkout", "[]", "json", "1", 100, "p", 900, (), '{"tp":1}')
    for workflow, owner, lease in ((started, "me", 500), (new("u"), None, None)):
        record, created = store.create_workflow(workflow, owner, lease).result()
        stored = store.get_workflow(workflow.id)
        assert created and stored is not None
        assert [(type(value), value) for value in astuple(record)] == [
            (type(value), value) for value in astuple(stored)
        ]


@covers("create_workflow", "fork_workflow", "enqueue_workflow")
def test_every_workflow_names_the_root_of_its_family(store: Store, database_url: str) -> None:
    # root_id (schema version 15) is what a distributed PostgreSQL would distribute by, so
    # that a family lives on one shard (docs/scaling.md): a top-level workflow's own ID,
    # a child's parent's root, however each was created.
    store.create_workflow(new("top"), None, None).result()
    running(store, "child", parent_id="top")  # owned: the hot path's insert
    store.create_workflow(new("grandchild", parent_id="child"), None, None).result()
    assert store.fork_workflow("child", new("fork"), 0, "fork", "test", 130.0) is not None
    store.enqueue_workflow(new("later"), Enqueue(not_before=200.0)).result()
    # A parent written before version 15 has no root_id: its child takes the parent's ID.
    store.create_workflow(new("old"), None, None).result()
    raw_sql(database_url, "UPDATE perdure_workflows SET root_id = NULL WHERE id = 'old'")
    store.create_workflow(new("old-child", parent_id="old"), None, None).result()
    rows = raw_rows(database_url, "perdure_workflows", "id", "id, root_id")
    assert dict(rows) == {
        "top": "top",
        "child": "top",
        "grandchild": "top",
        "fork": "fork",
        "later": "later",
        "old": None,
        "old-child": "old",
    }


@covers("create_workflow")
def test_concurrent_creates_of_one_id_create_it_once(store: Store) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def create() -> None:
        _, created = store.create_workflow(new("same"), None, None).result()
        with lock:
            results.append(created)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


@covers("list_workflows")
def test_list_filters_order_and_limit(store: Store) -> None:
    for i in range(5):
        store.create_workflow(new(f"w{i}", name="a" if i % 2 else "b", at=float(i)), None, None)
    store.create_workflow(new("w5", at=5.0), "me", 500.0).result()
    assert [r.id for r in store.list_workflows()] == ["w5", "w4", "w3", "w2", "w1", "w0"]
    assert [r.id for r in store.list_workflows(newest_first=False, limit=2)] == ["w0", "w1"]
    assert [r.id for r in store.list_workflows(name="a")] == ["w3", "w1"]
    assert [r.id for r in store.list_workflows(status=WorkflowState.RUNNING)] == ["w5"]
    assert [r.id for r in store.list_workflows(status="PENDING", created_after=2.5)] == [
        "w4",
        "w3",
    ]
    assert [r.id for r in store.list_workflows(created_before=1.5)] == ["w1", "w0"]
    assert store.list_workflows(status="FAILED") == []


@covers("complete_workflow")
def test_outcome_is_recorded_once_and_fenced(store: Store) -> None:
    lease = running(store, "a")
    store.set_note("a", "slow", 110.0)
    assert not store.complete_workflow("a", Lease("me", 2), "FAILED", None, "{}", 1.0).result()
    assert not store.complete_workflow("a", Lease("other", 1), "FAILED", None, "{}", 1.0).result()
    assert store.complete_workflow("a", lease, WorkflowState.SUCCEEDED, "1", None, 300.0).result()
    assert not store.complete_workflow("a", lease, "FAILED", None, "{}", 301.0).result()
    record = store.get_workflow("a")
    assert record is not None
    assert (record.status, record.output, record.error, record.owner, record.note) == (
        "SUCCEEDED",
        "1",
        None,
        None,
        None,
    )
    assert (record.lease_expires_at, record.finished_at) == (None, 300.0)
    assert not store.record_step("a", lease, step("0")).result()
    # An unowned PENDING workflow is completed with the empty lease (epoch 0).
    store.create_workflow(new("p"), None, None).result()
    assert store.complete_workflow("p", Lease("", 0), "CANCELLED", None, None, 5.0).result() in (
        True,
        False,
    )


@covers("complete_workflow")
def test_an_outcome_writes_the_step_records_it_carries_all_or_nothing(store: Store) -> None:
    """A run's last step records, held for its outcome, are written in its transaction,
    fenced as the outcome is: a refused outcome writes none of them."""
    lease = running(store, "a")
    refused = store.complete_workflow(
        "a", Lease("me", 2), "SUCCEEDED", "1", None, 300.0, steps=[step("0")]
    )
    assert not refused.result()
    assert store.load_steps("a") == []
    two = [step("0"), step("1", "FAILED")]
    assert store.complete_workflow("a", lease, "FAILED", None, "{}", 300.0, steps=two).result()
    assert [(s.position, s.status) for s in store.load_steps("a")] == [
        ("0", "SUCCEEDED"),
        ("1", "FAILED"),
    ]
    # One record (one statement on PostgreSQL), where a final one stands already.
    lease = running(store, "b")
    assert store.record_step("b", lease, step("0")).result()
    one = [step("0", "FAILED"), step("1")]
    assert store.complete_workflow("b", lease, "SUCCEEDED", "2", None, 300.0, steps=one).result()
    assert [(s.position, s.status) for s in store.load_steps("b")] == [
        ("0", "SUCCEEDED"),
        ("1", "SUCCEEDED"),
    ]
    # A child's: its outcome delivered to its parent in the same transaction.
    running(store, "p")
    child = running(store, "c", parent_id="p")
    done = store.complete_workflow(
        "c", child, "SUCCEEDED", "3", None, 300.0, parent_id="p", steps=[step("0")]
    )
    assert done.result()
    assert [s.position for s in store.load_steps("c")] == ["0"]
    assert [m.topic for m in store.list_messages("p")] == [CHILD_TOPIC + "c"]


def _pending_running_done(store: Store) -> Lease:
    """Workflows "pending", "running" (its lease returned) and "done" (SUCCEEDED, "1")."""
    store.create_workflow(new("pending"), None, None).result()
    lease = running(store, "running")
    done = running(store, "done")
    assert store.complete_workflow("done", done, "SUCCEEDED", "1", None, 5.0).result()
    return lease


@covers("get_workflows")
def test_get_workflows_reads_the_existing_ones_in_one_call(store: Store) -> None:
    lease = _pending_running_done(store)
    many = [f"x{i}" for i in range(600)]  # more than a statement's parameters would hold
    found = store.get_workflows(["pending", "running", "done", "missing", "done", *many])
    assert set(found) == {"pending", "running", "done"}
    # Each is the record get_workflow reads, under its own ID.
    assert all(found[wid] == store.get_workflow(wid) for wid in found)
    assert (found["done"].status, found["done"].output) == ("SUCCEEDED", "1")
    assert (found["running"].status, found["running"].epoch) == ("RUNNING", lease.epoch)
    assert store.get_workflows([]) == {}


@covers("watch_workflows")
def test_watch_workflows_reads_what_get_workflows_reads_and_changes_nothing_else(
    store: Store,
) -> None:
    """Marking workflows as waited for (a store that pushes events then pushes their
    ends) reads them as ``get_workflows`` does, and leaves every field as it was."""
    lease = _pending_running_done(store)
    many = [f"x{i}" for i in range(600)]  # more than a statement's parameters would hold
    before = store.get_workflows(["pending", "running", "done"])
    found = store.watch_workflows(["pending", "running", "done", "missing", "running", *many])
    assert found == before
    assert (found["running"].status, found["running"].epoch) == ("RUNNING", lease.epoch)
    assert store.watch_workflows([]) == {}
    # Marked twice, the same; and the outcome of a marked workflow is recorded as ever.
    assert store.watch_workflows(["running"]) == {"running": before["running"]}
    assert store.complete_workflow("running", lease, "SUCCEEDED", "2", None, 300.0).result()
    record = store.get_workflow("running")
    assert record is not None and (record.status, record.output) == ("SUCCEEDED", "2")


@covers("unfinished_among")
def test_unfinished_among_names_the_existing_workflows_without_an_outcome(store: Store) -> None:
    lease = _pending_running_done(store)
    many = [f"x{i}" for i in range(600)]  # more than a statement's parameters would hold
    found = store.unfinished_among(["pending", "running", "done", "missing", *many])
    assert found == {"pending", "running"}
    assert store.unfinished_among([]) == set()
    assert store.complete_workflow("running", lease, "FAILED", None, "{}", 6.0).result()
    assert store.unfinished_among(["running", "pending"]) == {"pending"}


@covers("complete_workflow", "send_message", "consume_message")
def test_a_childs_outcome_reaches_its_parent_once_as_the_same_bytes(store: Store) -> None:
    parent = running(store, "parent")
    child = running(store, "child", parent_id="parent")
    assert store.suspend_workflow("parent", parent, 900.0, CHILD_TOPIC + "child", 110.0).result()
    assert store.complete_workflow(
        "child", child, "FAILED", None, '{"e":"\u00e9"}', 120.0, parent_id="parent"
    ).result()
    # The parent is woken at once.
    record = store.get_workflow("parent")
    assert record is not None and record.wake_at == 120.0
    # A second completion (lost race) delivers nothing more.
    assert not store.complete_workflow(
        "child", child, "SUCCEEDED", "1", None, 121.0, parent_id="parent"
    ).result()
    (claimed,) = store.claim_workflows("me", ["checkout"], "1", 130.0, 500.0)
    lease = Lease("me", claimed.epoch)
    recv = StepRecord("0", "perdure.child", "SUCCEEDED", None, None, 1, None, 0.0)
    ok, payload, _ = store.consume_message(
        "parent", lease, CHILD_TOPIC + "child", recv, 131.0
    ).result()
    assert ok and payload == Outcome(WorkflowState.FAILED, None, '{"e":"\u00e9"}').to_json()
    nothing = StepRecord("1", "perdure.child", "SUCCEEDED", None, None, 1, None, 0.0)
    assert store.consume_message(
        "parent", lease, CHILD_TOPIC + "child", nothing, 132.0
    ).result() == (True, None, None)


@covers("set_note")
def test_a_note_is_attached_and_cleared(store: Store) -> None:
    store.create_workflow(new("a"), None, None).result()
    store.set_note("a", "waiting for a worker of version 2", 120.0)
    record = store.get_workflow("a")
    assert record is not None
    assert (record.note, record.updated_at) == ("waiting for a worker of version 2", 120.0)
    store.set_note("a", None, 121.0)
    record = store.get_workflow("a")
    assert record is not None and record.note is None
    store.set_note("missing", "x", 1.0)  # no workflow: nothing happens


# -- steps -----------------------------------------------------------------------------------


@covers("record_step", "load_steps")
def test_record_step_is_fenced_and_final_records_are_never_replaced(store: Store) -> None:
    lease = running(store, "a")
    assert not store.record_step("a", Lease("me", 2), step("0")).result()
    assert not store.record_step("a", Lease("other", 1), step("0")).result()
    assert not store.record_step("missing", lease, step("0")).result()
    assert store.load_steps("a") == []
    assert store.record_step("a", lease, step("0", "RETRYING", None)).result()
    assert store.record_step("a", lease, step("0", "WAITING", None)).result()
    assert store.record_step("a", lease, step("0", "SUCCEEDED")).result()
    for final in ("SUCCEEDED", "FAILED", "CANCELLED", "RETRYING"):
        assert not store.record_step("a", lease, step("0", final, None)).result()
    assert store.record_step("a", lease, step("2")).result()
    assert store.record_step("a", lease, step("1", "FAILED", None)).result()
    assert store.record_step("a", lease, step("1.0", "CANCELLED", None)).result()
    steps = store.load_steps("a")
    # In the order they were first recorded.
    assert [(s.position, s.status) for s in steps] == [
        ("0", "SUCCEEDED"),
        ("2", "SUCCEEDED"),
        ("1", "FAILED"),
        ("1.0", "CANCELLED"),
    ]
    assert steps[0] == StepRecord("0", "s", "SUCCEEDED", '"ok"', None, 1, None, 150.0)
    assert store.load_steps("missing") == []


@covers("load_steps_many")
def test_load_steps_many_is_load_steps_of_each(store: Store) -> None:
    lease_a, lease_b = running(store, "a"), running(store, "b")
    running(store, "c")
    for position in ("0", "2", "1"):
        assert store.record_step("a", lease_a, step(position)).result()
    assert store.record_step("b", lease_b, step("0", "RETRYING", None)).result()
    found = store.load_steps_many(["a", "b", "c", "missing"])
    assert found == {
        "a": store.load_steps("a"),
        "b": store.load_steps("b"),
        "c": [],
        "missing": [],
    }
    assert [s.position for s in found["a"]] == ["0", "2", "1"]  # first recorded first
    assert store.load_steps_many([]) == {}


# -- executors and leases --------------------------------------------------------------------


@covers("register_executor", "list_executors")
def test_executors_register_refresh_and_list(store: Store) -> None:
    store.register_executor(executor("e1"))
    store.register_executor(executor("e2"))
    store.register_executor(executor("gone", stopped_at=5.0))
    assert sorted(e.id for e in store.list_executors()) == ["e1", "e2"]
    # Registering again refreshes the row.
    store.register_executor(ExecutorRecord("e1", "other", 7, "2", 3.0, 4.0, 19.0, None))
    (e1,) = [e for e in store.list_executors() if e.id == "e1"]
    assert e1 == ExecutorRecord("e1", "other", 7, "2", 3.0, 4.0, 19.0, None)


@covers("heartbeat")
def test_heartbeat_renews_the_executor_row_alone_and_reports_its_active_workflows(
    store: Store,
) -> None:
    store.register_executor(executor("me"))
    running(store, "a")
    lease_b = running(store, "b")
    running(store, "theirs", owner="them")
    store.complete_workflow("b", lease_b, "SUCCEEDED", "1", None, 5.0).result()
    before = store.get_workflow("a")
    assert store.heartbeat("me", 10.0, 25.0) == {"a"}
    # One row, whatever the number of workflows: the executor's lease stands for theirs.
    assert store.get_workflow("a") == before
    theirs = store.get_workflow("theirs")
    assert theirs is not None and theirs.lease_expires_at == 500.0
    (me,) = store.list_executors()
    assert (me.heartbeat_at, me.lease_expires_at) == (10.0, 25.0)
    # A workflow taken over is no longer reported as owned.
    store.claim_workflows("thief", ["checkout"], "1", 600.0, 615.0)
    assert store.heartbeat("me", 601.0, 616.0) == set()


@covers("release_expired", "heartbeat")
def test_an_executor_whose_lease_lapsed_is_released_until_it_renews_it(store: Store) -> None:
    store.register_executor(executor("them"))  # its lease: until 17.0
    for workflow_id in ("a", "b"):
        store.create_workflow(new(workflow_id), "them", HELD_BY_EXECUTOR).result()
    # Rows held by the executor's lease never expire on their own: nothing to claim.
    assert store.claim_workflows("me", ["checkout"], "1", 16.0, HELD_BY_EXECUTOR) == []
    assert store.claim_workflows("me", ["checkout"], "1", 10_000.0, HELD_BY_EXECUTOR) == []
    # Not lapsed yet: nothing released.
    assert store.release_expired("them", 16.0) is None
    assert store.get_workflow("a").owner == "them"  # type: ignore[union-attr]
    # Lapsed: its workflows go back to be claimed, it is marked stopped, once.
    assert store.release_expired("them", 18.0) == 2
    assert store.release_expired("them", 19.0) is None
    assert store.list_executors() == []
    for workflow_id in ("a", "b"):
        record = store.get_workflow(workflow_id)
        assert record is not None and (record.owner, record.status) == (None, "RUNNING")
    # It comes back (it was frozen): nothing is its own any more, and it runs again.
    assert store.heartbeat("them", 20.0, 35.0) == set()
    assert [e.id for e in store.list_executors()] == ["them"]
    claimed = store.claim_workflows("me", ["checkout"], "1", 21.0, HELD_BY_EXECUTOR)
    assert sorted((r.id, r.epoch, r.recoveries) for r in claimed) == [("a", 2, 1), ("b", 2, 1)]
    assert not store.record_step("a", Lease("them", 1), step("0")).result()


@covers("claim_workflows")
def test_claim_takes_what_nobody_runs_and_fences_the_previous_owner(store: Store) -> None:
    store.create_workflow(new("pending", at=1), None, None).result()
    store.create_workflow(new("expired", at=2), "old", 50.0).result()
    store.create_workflow(new("alive", at=3), "alive", 500.0).result()
    store.create_workflow(new("dead", at=4), "dead", 500.0).result()
    store.create_workflow(new("other-name", name="refund", at=5), None, None).result()
    store.create_workflow(new("other-version", at=6, version="2"), None, None).result()
    store.create_workflow(new("sleeping", at=7), "me", 500.0).result()
    assert store.suspend_workflow("sleeping", Lease("me", 1), 300.0, None, 90.0).result()
    store.set_note("pending", "stuck", 90.0)
    claimed = store.claim_workflows(
        "me", ["checkout"], "1", 100.0, HELD_BY_EXECUTOR, dead_owners=["dead"]
    )
    assert [r.id for r in claimed] == ["pending", "expired", "dead"]
    assert all(
        (r.owner, r.status, r.lease_expires_at, r.note, r.wake_at)
        == ("me", "RUNNING", HELD_BY_EXECUTOR, None, None)
        for r in claimed
    )
    assert [(r.epoch, r.recoveries) for r in claimed] == [(1, 0), (2, 1), (2, 1)]
    # The previous owner is fenced out.
    assert not store.record_step("expired", Lease("old", 1), step("0")).result()
    assert store.record_step("expired", Lease("me", 2), step("0")).result()
    assert store.claim_workflows("other", ["checkout"], "1", 100.0, 115.0) == []
    # A suspended workflow is claimed when it wakes (the others are held by my
    # executor's lease); waking is not a recovery.
    (woken,) = store.claim_workflows("other", ["checkout"], "1", 300.0, 315.0)
    assert (woken.id, woken.epoch, woken.recoveries, woken.wake_at) == ("sleeping", 2, 0, None)


@covers("claim_workflows")
def test_claim_limit_oldest_first_and_concurrent_claims_never_overlap(store: Store) -> None:
    for i in range(40):
        store.create_workflow(new(f"w{i:02d}", at=100.0 - i), None, None).result()
    first = store.claim_workflows("e0", ["checkout"], "1", 200.0, 215.0, limit=2)
    assert [r.id for r in first] == ["w39", "w38"]
    claimed: dict[str, list[str]] = {f"e{n}": [] for n in range(1, 5)}
    barrier = threading.Barrier(len(claimed))

    def claim(name: str) -> None:
        barrier.wait()
        while batch := store.claim_workflows(name, ["checkout"], "1", 200.0, 215.0, limit=3):
            claimed[name].extend(r.id for r in batch)

    threads = [threading.Thread(target=claim, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(wid for ids in claimed.values() for wid in ids)
    assert every == [f"w{i:02d}" for i in range(38)]


@covers("unclaimable_workflows")
def test_unclaimable_lists_what_no_matching_executor_can_run(store: Store) -> None:
    store.create_workflow(new("mine", at=1), None, None).result()
    store.create_workflow(new("refund", name="refund", at=2), None, None).result()
    store.create_workflow(new("v2", at=3, version="2"), None, None).result()
    store.create_workflow(new("v2-owned", at=4, version="2"), "them", 500.0).result()
    store.create_workflow(new("v2-expired", at=5, version="2"), "them", 50.0).result()
    store.create_workflow(new("v2-sleeping", at=6, version="2"), "them", 500.0).result()
    assert store.suspend_workflow("v2-sleeping", Lease("them", 1), 300.0, None, 90.0).result()
    ids = [r.id for r in store.unclaimable_workflows(["checkout"], "1", now=100.0)]
    assert ids == ["refund", "v2", "v2-expired"]
    assert [r.id for r in store.unclaimable_workflows(["checkout"], "1", 100.0, limit=1)] == [
        "refund"
    ]
    assert "v2-sleeping" in [r.id for r in store.unclaimable_workflows(["x"], "1", now=300.0)]


@covers("owned_workflows", "release_workflows")
def test_release_drops_leases_at_once_and_stops_the_executor(store: Store) -> None:
    store.register_executor(executor("me"))
    running(store, "a")
    lease_b = running(store, "b")
    running(store, "theirs", owner="them")
    store.complete_workflow("b", lease_b, "SUCCEEDED", "1", None, 5.0).result()
    assert store.owned_workflows("me") == ["a"]
    assert store.release_workflows("me", 11.0) == 1
    assert store.owned_workflows("me") == []
    record = store.get_workflow("a")
    assert record is not None
    assert (record.owner, record.lease_expires_at, record.status) == (None, None, "RUNNING")
    assert store.list_executors() == []
    # Claimable at once by another executor.
    assert [r.id for r in store.claim_workflows("next", ["checkout"], "1", 12.0, 27.0)] == ["a"]
    assert store.release_workflows("nobody", 13.0) == 0


def test_every_store_operation_has_a_contract_test() -> None:
    # The other half of the suite registers its tests when imported (pytest imported it
    # already when both files run; alone, this file imports it here).
    importlib.import_module("test_store_contract_streams")
    importlib.import_module("test_store_contract_waiting")
    importlib.import_module("test_store_contract_holds")
    importlib.import_module("test_store_contract_operations")
    importlib.import_module("test_store_contract_schedules")
    importlib.import_module("test_store_contract_compliance")
    importlib.import_module("test_store_contract_telemetry")
    importlib.import_module("test_store_contract_queues")
    importlib.import_module("test_store_contract_operator_log")
    operations = set(Store.__abstractmethods__) | {"listen"}
    missing = sorted(operations - set(COVERED))
    assert not missing, f"Store operations without a contract test: {missing}"
    assert len(Store.__abstractmethods__) >= 31
