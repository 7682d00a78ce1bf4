"""The store contract: every operation of ``perdure.storage.Store``, run against every
store (SQLite and PostgreSQL through the ``database_url`` fixture).

Each test asserts what the operation's docstring promises: its return value, its
fencing by lease and epoch, what it changes and what it leaves alone. ``@covers``
registers which operations a test covers; ``test_every_store_operation_has_a_contract_test``
fails when an operation of the ``Store`` ABC has none.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from perdure import ConfigurationError
from perdure._model import Outcome, WorkflowState
from perdure.storage import (
    BREAKER_TOPIC,
    CHILD_TOPIC,
    EVENT_DONE,
    EVENT_READY,
    ExecutorRecord,
    Lease,
    NewWorkflow,
    StepRecord,
    Store,
    open_store,
)

F = TypeVar("F", bound=Callable[..., Any])

#: Store operation -> the tests that check its contract.
COVERED: dict[str, list[str]] = {}


def covers(*operations: str) -> Callable[[F], F]:
    """Register the decorated test as a contract test of ``operations``."""

    def register(test: F) -> F:
        for operation in operations:
            assert hasattr(Store, operation), f"Store has no operation {operation!r}"
            COVERED.setdefault(operation, []).append(test.__name__)
        return test

    return register


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def new(
    workflow_id: str,
    name: str = "checkout",
    at: float = 100.0,
    version: str = "1",
    parent_id: str | None = None,
    deadline_at: float | None = None,
) -> NewWorkflow:
    return NewWorkflow(
        workflow_id, name, '{"args":[]}', "json", version, at, parent_id, deadline_at
    )


def step(position: str, status: str = "SUCCEEDED", output: str | None = '"ok"') -> StepRecord:
    error = None if status == "SUCCEEDED" else '{"type":"x"}'
    next_at = 200.0 if status in ("RETRYING", "WAITING") else None
    return StepRecord(position, "s", status, output, error, 1, next_at, 150.0)


def running(store: Store, workflow_id: str, owner: str = "me", **kwargs: Any) -> Lease:
    """A RUNNING workflow owned by ``owner`` (epoch 1); its lease."""
    record, created = store.create_workflow(new(workflow_id, **kwargs), owner, 500.0).result()
    assert created and record.epoch == 1
    return Lease(owner, 1)


def executor(executor_id: str, stopped_at: float | None = None) -> ExecutorRecord:
    return ExecutorRecord(executor_id, "host", 42, "1", 1.0, 2.0, 17.0, stopped_at)


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
    ok, payload = store.consume_message(
        "parent", lease, CHILD_TOPIC + "child", recv, 131.0
    ).result()
    assert ok and payload == Outcome(WorkflowState.FAILED, None, '{"e":"\u00e9"}').to_json()
    nothing = StepRecord("1", "perdure.child", "SUCCEEDED", None, None, 1, None, 0.0)
    assert store.consume_message(
        "parent", lease, CHILD_TOPIC + "child", nothing, 132.0
    ).result() == (True, None)


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
def test_heartbeat_renews_the_executor_and_its_active_workflows(store: Store) -> None:
    store.register_executor(executor("me"))
    running(store, "a")
    lease_b = running(store, "b")
    running(store, "theirs", owner="them")
    store.complete_workflow("b", lease_b, "SUCCEEDED", "1", None, 5.0).result()
    assert store.heartbeat("me", 10.0, 25.0) == {"a"}
    a, theirs = store.get_workflow("a"), store.get_workflow("theirs")
    assert a is not None and a.lease_expires_at == 25.0
    assert theirs is not None and theirs.lease_expires_at == 500.0
    (me,) = store.list_executors()
    assert (me.heartbeat_at, me.lease_expires_at) == (10.0, 25.0)
    # A workflow taken over is no longer reported as owned.
    store.claim_workflows("thief", ["checkout"], "1", 30.0, 45.0)
    assert store.heartbeat("me", 31.0, 46.0) == set()


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
    claimed = store.claim_workflows("me", ["checkout"], "1", 100.0, 115.0, dead_owners=["dead"])
    assert [r.id for r in claimed] == ["pending", "expired", "dead"]
    assert all(
        (r.owner, r.status, r.lease_expires_at, r.note, r.wake_at)
        == ("me", "RUNNING", 115.0, None, None)
        for r in claimed
    )
    assert [(r.epoch, r.recoveries) for r in claimed] == [(1, 0), (2, 1), (2, 1)]
    # The previous owner is fenced out.
    assert not store.record_step("expired", Lease("old", 1), step("0")).result()
    assert store.record_step("expired", Lease("me", 2), step("0")).result()
    assert store.claim_workflows("other", ["checkout"], "1", 100.0, 115.0) == []
    # A suspended workflow is claimed when it wakes; waking is not a recovery.
    store.heartbeat("me", 299.0, 400.0)  # keeps the others
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


# -- waiting ---------------------------------------------------------------------------------


@covers("suspend_workflow", "next_wake_at")
def test_suspend_is_fenced_and_drops_the_lease(store: Store) -> None:
    lease = running(store, "a")
    assert not store.suspend_workflow("a", Lease("me", 2), 300.0, None, 100.0).result()
    assert store.next_wake_at(after=0.0) is None
    assert store.suspend_workflow("a", lease, 300.0, "topic", 100.0).result()
    record = store.get_workflow("a")
    assert record is not None
    assert (record.status, record.owner, record.lease_expires_at) == ("RUNNING", None, None)
    assert (record.wake_at, record.wait_topic) == (300.0, "topic")
    assert not store.record_step("a", lease, step("0")).result()
    assert not store.suspend_workflow("a", lease, 400.0, None, 101.0).result()
    lease_b = running(store, "b")
    assert store.suspend_workflow("b", lease_b, 250.0, None, 100.0).result()
    assert store.next_wake_at(after=0.0) == 250.0
    assert store.next_wake_at(after=250.0) == 300.0
    assert store.next_wake_at(after=300.0) is None


@covers("suspend_workflow", "send_message")
def test_a_pending_message_or_a_closed_breaker_wakes_a_suspension_at_once(store: Store) -> None:
    lease = running(store, "a")
    assert store.send_message("a", "t", '"m"', None, 90.0).result() is True
    assert store.suspend_workflow("a", lease, 900.0, "t", 100.0).result()
    record = store.get_workflow("a")
    assert record is not None and record.wake_at == 100.0
    # A message on another topic does not count.
    lease_b = running(store, "b")
    assert store.send_message("b", "other", '"m"', None, 90.0).result() is True
    assert store.suspend_workflow("b", lease_b, 900.0, "t", 100.0).result()
    record = store.get_workflow("b")
    assert record is not None and record.wake_at == 900.0
    # Parked on a breaker that is CLOSED: wakes at once; on an OPEN one: waits.
    assert store.count_breaker_failure("closed", 1.0, 5, 60.0, 50.0, "boom") is False
    assert store.count_breaker_failure("open", 1.0, 1, 60.0, 50.0, "boom") is True
    lease_c, lease_d = running(store, "c"), running(store, "d")
    assert store.suspend_workflow("c", lease_c, 900.0, BREAKER_TOPIC + "closed", 100.0).result()
    assert store.suspend_workflow("d", lease_d, 900.0, BREAKER_TOPIC + "open", 100.0).result()
    c, d = store.get_workflow("c"), store.get_workflow("d")
    assert c is not None and c.wake_at == 100.0
    assert d is not None and d.wake_at == 900.0


@covers("send_message")
def test_send_is_idempotent_per_workflow_and_refused_when_nobody_would_receive(
    store: Store,
) -> None:
    assert store.send_message("missing", "", "1", None, 100.0).result() is None
    lease = running(store, "a")
    running(store, "b")
    assert store.send_message("a", "", "1", "key", 100.0).result() is True
    assert store.send_message("a", "", "2", "key", 101.0).result() is False
    assert store.send_message("b", "", "3", "key", 101.0).result() is True
    # Suspended on this topic: woken (claimable at once); on another topic: not.
    lease_c = running(store, "c")
    assert store.suspend_workflow("c", lease_c, 900.0, "t", 102.0).result()
    assert store.send_message("c", "other", "1", None, 103.0).result() is True
    record = store.get_workflow("c")
    assert record is not None and record.wake_at == 900.0
    assert store.send_message("c", "t", "2", None, 104.0).result() is True
    record = store.get_workflow("c")
    assert record is not None and record.wake_at == 104.0
    # A finished workflow takes no message; a repeated key still says "repeated".
    assert store.complete_workflow("a", lease, "SUCCEEDED", "1", None, 106.0).result()
    assert store.send_message("a", "", "4", None, 107.0).result() is None
    assert store.send_message("a", "", "4", "key", 107.0).result() is False


@covers("consume_message")
def test_messages_are_consumed_in_order_exactly_once_with_their_record(store: Store) -> None:
    lease = running(store, "a")
    for i in range(3):
        assert store.send_message("a", "t", f'"m{i}"', None, 100.0 + i).result() is True

    def recv(position: str) -> StepRecord:
        return StepRecord(position, "perdure.recv", "SUCCEEDED", "ignored", None, 1, None, 0.0)

    assert store.consume_message("a", Lease("me", 2), "t", recv("0"), 110.0).result() == (
        False,
        None,
    )
    assert store.consume_message("a", lease, "t", recv("0"), 110.0).result() == (True, '"m0"')
    assert store.consume_message("a", lease, "t", recv("0"), 111.0).result() == (False, None)
    assert store.consume_message("a", lease, "t", recv("1"), 112.0).result() == (True, '"m1"')
    # A WAITING record at the position is replaced by the message's.
    assert store.record_step("a", lease, step("2", "WAITING", None)).result()
    assert store.consume_message("a", lease, "t", recv("2"), 113.0).result() == (True, '"m2"')
    assert store.consume_message("a", lease, "t", recv("3"), 114.0).result() == (True, None)
    steps = store.load_steps("a")
    assert [(s.position, s.status, s.output, s.updated_at) for s in steps] == [
        ("0", "SUCCEEDED", '"m0"', 110.0),
        ("1", "SUCCEEDED", '"m1"', 112.0),
        ("2", "SUCCEEDED", '"m2"', 113.0),
    ]


@covers("set_event", "get_event")
def test_an_event_is_set_only_with_its_record(store: Store) -> None:
    lease = running(store, "a")

    def setting(position: str, value: str) -> StepRecord:
        return StepRecord(position, "perdure.set_event", "SUCCEEDED", value, None, 1, None, 1.0)

    assert store.get_event("a", "k") is None
    assert not store.set_event("a", Lease("me", 2), setting("0", '"one"'), "k").result()
    assert store.get_event("a", "k") is None
    assert store.set_event("a", lease, setting("0", '"one"'), "k").result()
    assert store.get_event("a", "k") == '"one"'
    assert not store.set_event("a", lease, setting("0", '"two"'), "k").result()
    assert store.get_event("a", "k") == '"one"'
    assert store.set_event("a", lease, setting("1", '"three"'), "k").result()
    assert store.get_event("a", "k") == '"three"'
    assert store.get_event("a", "other") is None and store.get_event("missing", "k") is None


# -- cancellation and continue_as_new ----------------------------------------------------------


@covers("cancel_workflow", "cancel_requests")
def test_cancel_reaches_every_active_descendant_once(store: Store) -> None:
    assert store.cancel_workflow("missing", 1.0) is None
    running(store, "root")
    lease_child = running(store, "child", parent_id="root")
    store.create_workflow(new("grandchild", parent_id="child"), None, None).result()
    lease_done = running(store, "done-child", parent_id="root")
    store.complete_workflow("done-child", lease_done, "SUCCEEDED", "1", None, 5.0).result()
    running(store, "stranger", owner="them")
    assert store.suspend_workflow("child", lease_child, 900.0, "t", 10.0).result()
    assert sorted(store.cancel_workflow("root", 20.0) or []) == ["child", "grandchild", "root"]
    child, grandchild, root = (store.get_workflow(i) for i in ("child", "grandchild", "root"))
    assert child is not None and (child.cancel_requested_at, child.wake_at) == (20.0, 20.0)
    assert grandchild is not None and grandchild.cancel_requested_at == 20.0
    assert grandchild.wake_at is None  # not suspended: nothing to wake
    assert root is not None and root.cancel_requested_at == 20.0
    done = store.get_workflow("done-child")
    assert done is not None and done.cancel_requested_at is None
    # Asked before: nobody is newly asked, and the first request's time stays.
    assert store.cancel_workflow("root", 30.0) == []
    root = store.get_workflow("root")
    assert root is not None and root.cancel_requested_at == 20.0
    assert store.cancel_workflow("done-child", 30.0) == []
    assert store.cancel_requests("me") == ["root"]
    assert store.cancel_requests("them") == []


@covers("continue_workflow")
def test_continue_as_new_restarts_the_history_and_keeps_the_rest(store: Store) -> None:
    lease = running(store, "a", deadline_at=900.0)
    assert store.record_step("a", lease, step("0")).result()
    assert store.send_message("a", "t", '"kept"', None, 101.0).result() is True
    event = StepRecord("1", "perdure.set_event", "SUCCEEDED", '"e"', None, 1, None, 1.0)
    assert store.set_event("a", lease, event, "k").result()
    assert store.continue_workflow("a", Lease("me", 2), '{"args":[2]}', 110.0).result() is None
    record = store.continue_workflow("a", lease, '{"args":[2]}', 110.0).result()
    assert record is not None
    assert (record.inputs, record.generation, record.owner, record.epoch) == (
        '{"args":[2]}',
        1,
        "me",
        1,
    )
    assert (record.deadline_at, record.updated_at) == (900.0, 110.0)
    assert record == store.get_workflow("a")
    assert store.load_steps("a") == []
    assert store.get_event("a", "k") == '"e"'
    recv = StepRecord("0", "perdure.recv", "SUCCEEDED", None, None, 1, None, 0.0)
    assert store.consume_message("a", lease, "t", recv, 111.0).result() == (True, '"kept"')
    again = store.continue_workflow("a", lease, "{}", 112.0).result()
    assert again is not None and again.generation == 2


# -- circuit breakers ----------------------------------------------------------------------------


@covers("count_breaker_failure", "get_breaker")
def test_failures_are_counted_in_a_window_and_open_the_breaker_once(store: Store) -> None:
    assert store.get_breaker("b") is None
    assert store.count_breaker_failure("b", 10.0, 3, 60.0, 100.0, "e1") is False
    assert store.count_breaker_failure("b", 20.0, 3, 60.0, 100.0, "e2") is False
    breaker = store.get_breaker("b")
    assert breaker is not None
    assert (breaker.state, breaker.failures, breaker.window_start, breaker.last_error) == (
        "CLOSED",
        2,
        10.0,
        "e2",
    )
    assert breaker.parked == 0
    # The window passed: the count restarts at 1.
    assert store.count_breaker_failure("b", 80.0, 3, 60.0, 100.0, "e3") is False
    breaker = store.get_breaker("b")
    assert breaker is not None and (breaker.failures, breaker.window_start) == (1, 80.0)
    assert store.count_breaker_failure("b", 81.0, 3, 60.0, 200.0, "e4") is False
    assert store.count_breaker_failure("b", 82.0, 3, 60.0, 200.0, "e5") is True
    breaker = store.get_breaker("b")
    assert breaker is not None
    assert (breaker.state, breaker.opened_at, breaker.retry_at) == ("OPEN", 82.0, 200.0)
    # An OPEN breaker counts nothing more.
    assert store.count_breaker_failure("b", 83.0, 3, 60.0, 300.0, "e6") is False
    breaker = store.get_breaker("b")
    assert breaker is not None and (breaker.failures, breaker.retry_at) == (3, 200.0)


@covers("count_breaker_failure")
def test_concurrent_failures_each_count_once_and_one_opens(store: Store) -> None:
    opened: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def fail() -> None:
        barrier.wait()
        result = store.count_breaker_failure("b", 10.0, 6, 60.0, 100.0, "boom")
        with lock:
            opened.append(result)

    threads = [threading.Thread(target=fail) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(opened) == [False] * 5 + [True]
    breaker = store.get_breaker("b")
    assert breaker is not None and (breaker.state, breaker.failures) == ("OPEN", 6)


@covers("claim_breaker_probe", "reopen_breaker")
def test_one_probe_holder_at_a_time_and_a_failed_probe_reopens(store: Store) -> None:
    assert not store.claim_breaker_probe("b", "w#1", 10.0, 40.0)  # no row: CLOSED
    assert store.count_breaker_failure("b", 10.0, 1, 60.0, 100.0, "e") is True
    assert not store.claim_breaker_probe("b", "w#1", 99.0, 130.0)  # cooling down
    assert store.claim_breaker_probe("b", "w#1", 100.0, 130.0)
    assert store.claim_breaker_probe("b", "w#1", 101.0, 131.0)  # its own, again
    assert not store.claim_breaker_probe("b", "w#2", 110.0, 140.0)
    breaker = store.get_breaker("b")
    assert breaker is not None
    assert (breaker.state, breaker.probe_holder, breaker.probe_expires_at) == (
        "HALF_OPEN",
        "w#1",
        131.0,
    )
    # The probe expired: another may take it; the old holder can no longer reopen.
    assert store.claim_breaker_probe("b", "w#2", 131.0, 160.0)
    assert not store.reopen_breaker("b", "w#1", 132.0, 300.0, "late")
    assert store.reopen_breaker("b", "w#2", 133.0, 300.0, "still down")
    breaker = store.get_breaker("b")
    assert breaker is not None
    assert (breaker.state, breaker.opened_at, breaker.retry_at, breaker.probe_holder) == (
        "OPEN",
        133.0,
        300.0,
        None,
    )
    assert breaker.last_error == "still down"
    assert not store.reopen_breaker("b", "w#2", 134.0, 400.0, "not half-open")


@covers("claim_breaker_probe")
def test_concurrent_probe_claims_have_one_winner(store: Store) -> None:
    assert store.count_breaker_failure("b", 10.0, 1, 60.0, 100.0, "e") is True
    won: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def claim(holder: str) -> None:
        barrier.wait()
        if store.claim_breaker_probe("b", holder, 100.0, 130.0):
            with lock:
                won.append(holder)

    threads = [threading.Thread(target=claim, args=(f"w#{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1


@covers("close_breaker", "list_breakers")
def test_closing_wakes_every_parked_workflow(store: Store) -> None:
    assert store.close_breaker("b", 1.0) is None  # no row
    assert store.count_breaker_failure("b", 10.0, 1, 60.0, 100.0, "e") is True
    assert store.count_breaker_failure("other", 10.0, 5, 60.0, 100.0, "e") is False
    for name in ("p1", "p2"):
        assert store.suspend_workflow(
            name, running(store, name), 900.0, BREAKER_TOPIC + "b", 20.0
        ).result()
    assert store.suspend_workflow(
        "elsewhere", running(store, "elsewhere"), 900.0, "t", 20.0
    ).result()
    listed = store.list_breakers()
    assert [(b.name, b.state, b.parked) for b in listed] == [
        ("b", "OPEN", 2),
        ("other", "CLOSED", 0),
    ]
    assert store.close_breaker("b", 150.0) == 2
    breaker = store.get_breaker("b")
    assert breaker is not None
    assert (breaker.state, breaker.failures, breaker.retry_at, breaker.probe_holder) == (
        "CLOSED",
        0,
        None,
        None,
    )
    woken = {i: store.get_workflow(i) for i in ("p1", "p2", "elsewhere")}
    assert [w.wake_at if w else None for w in woken.values()] == [150.0, 150.0, 900.0]
    assert store.close_breaker("b", 151.0) is None  # CLOSED already
    assert [(b.name, b.parked) for b in store.list_breakers()] == [("b", 2), ("other", 0)]


# -- keys every store accepts (issue 10, item 1) ---------------------------------------------------


LONG = "x" * 3000


@covers("create_workflow", "send_message", "set_event", "suspend_workflow")
@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda s, lease: s.create_workflow(new(LONG), None, None), id="workflow-id"),
        pytest.param(
            lambda s, lease: s.create_workflow(new("n", name=LONG), None, None), id="name"
        ),
        pytest.param(lambda s, lease: s.send_message("a", LONG, "1", None, 1.0), id="topic"),
        pytest.param(lambda s, lease: s.send_message("a", "t", "1", LONG, 1.0), id="idem-key"),
        pytest.param(lambda s, lease: s.send_message(LONG, "t", "1", None, 1.0), id="send-id"),
        pytest.param(lambda s, lease: s.set_event("a", lease, step("0"), LONG), id="event-key"),
        pytest.param(
            lambda s, lease: s.suspend_workflow("a", lease, 9.0, CHILD_TOPIC + LONG, 1.0),
            id="child-topic",
        ),
        pytest.param(lambda s, lease: s.create_workflow(new("a\x00b"), None, None), id="nul"),
        pytest.param(
            lambda s, lease: s.create_workflow(new("a\ud800"), None, None), id="surrogate"
        ),
    ],
)
def test_keys_no_store_can_index_are_refused_before_writing(
    store: Store, write: Callable[[Store, Lease], Any]
) -> None:
    lease = running(store, "a")
    with pytest.raises(ConfigurationError) as info:
        result = write(store, lease)
        with contextlib.suppress(AttributeError):
            result.result(timeout=10)
    message = str(info.value)
    assert "1,000 bytes" in message or "NUL" in message or "surrogate" in message, message
    assert isinstance(info.value, ValueError)
    # Nothing was written, and the store goes on.
    assert [r.id for r in store.list_workflows()] == ["a"]
    assert store.load_steps("a") == [] and store.get_event("a", LONG) is None
    assert store.record_step("a", lease, step("0")).result()


@covers("create_workflow")
def test_keys_up_to_the_limit_are_accepted_on_every_store(store: Store) -> None:
    longest = "\u00e9" * 500  # 1,000 bytes of UTF-8
    lease = running(store, longest)
    assert store.send_message(longest, longest, "1", longest, 1.0).result() is True
    setting = StepRecord("0", "perdure.set_event", "SUCCEEDED", '"v"', None, 1, None, 1.0)
    assert store.set_event(longest, lease, setting, longest).result()
    assert store.get_event(longest, longest) == '"v"'
    child = running(store, "c", parent_id=longest)
    assert store.complete_workflow("c", child, "SUCCEEDED", "1", None, 2.0, longest).result()


def test_every_store_operation_has_a_contract_test() -> None:
    operations = set(Store.__abstractmethods__) | {"listen"}
    missing = sorted(operations - set(COVERED))
    assert not missing, f"Store operations without a contract test: {missing}"
    assert len(Store.__abstractmethods__) >= 31
