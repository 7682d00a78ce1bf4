"""The store contract, third part (see ``test_store_contract.py``): operating workflows:
resume, fork, the operator actions log, inspection (events, messages, children), step
start times and listing pages; run against every store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from store_contract import covers, new, running, step

from perdure.storage import Lease, StepRecord, Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def failed(store: Store, workflow_id: str, status: str = "FAILED") -> Lease:
    """A workflow with steps 0 (SUCCEEDED), 1 (RETRYING then FAILED) that ended ``status``."""
    lease = running(store, workflow_id)
    assert store.record_step(workflow_id, lease, step("0")).result()
    first = StepRecord("1", "s", "RETRYING", None, '{"type":"x"}', 1, 200.0, 150.0, 140.0)
    assert store.record_step(workflow_id, lease, first).result()
    final = StepRecord("1", "s", "FAILED", None, '{"type":"x"}', 2, None, 160.0, 155.0)
    assert store.record_step(workflow_id, lease, final).result()
    assert store.complete_workflow(workflow_id, lease, status, None, '{"e":1}', 170.0).result()
    return lease


@covers("record_step", "load_steps")
def test_a_step_keeps_the_start_of_its_first_attempt(store: Store) -> None:
    failed(store, "a")
    steps = {s.position: s for s in store.load_steps("a")}
    # The retry's record (started 140) was replaced by the final one (155): the start stays.
    assert steps["1"].started_at == 140.0 and steps["1"].updated_at == 160.0
    assert steps["0"].started_at is None  # not timed


@covers("resume_workflow", "list_actions")
def test_resume_takes_a_failed_workflow_up_again_fenced_and_logged(store: Store) -> None:
    old = failed(store, "a")
    before = store.get_workflow("a")
    assert before is not None
    resumed = store.resume_workflow("a", "alice", 200.0)
    assert resumed is not None
    record, done = resumed
    assert done
    assert (record.status, record.owner, record.output, record.error) == (
        "PENDING",
        None,
        None,
        None,
    )
    assert record.epoch == before.epoch + 1 and record.resumes == 1
    assert record.finished_at is None and record.cancel_requested_at is None
    # The failed step's records are gone (it runs afresh); the succeeded one stays.
    assert [s.position for s in store.load_steps("a")] == ["0"]
    # The old lease is fenced out.
    assert not store.record_step("a", old, step("1")).result()
    # Claimable like a new workflow, with a new epoch.
    (claimed,) = store.claim_workflows("w2", ["checkout"], "1", 201.0, 216.0)
    assert claimed.id == "a" and claimed.epoch == record.epoch + 1
    # Logged, with the outcome it replaced.
    (action,) = store.list_actions("a")
    assert (action.action, action.actor, action.at, action.workflow_id) == (
        "resume",
        "alice",
        200.0,
        "a",
    )
    details = json.loads(action.details)
    assert details["replaced"]["status"] == "FAILED" and details["replaced"]["error"] == '{"e":1}'
    assert details["removed_steps"][0][:3] == ["1", "s", "FAILED"]
    # Not resumable while active: untouched, not logged.
    again = store.resume_workflow("a", "alice", 202.0)
    assert again is not None and again[1] is False and again[0].status == "RUNNING"
    assert len(store.list_actions("a")) == 1
    assert store.resume_workflow("nope", "alice", 203.0) is None


@covers("resume_workflow")
def test_concurrent_resumes_resume_once(store: Store) -> None:
    failed(store, "a", status="CANCELLED")
    results: list[bool] = []
    lock = threading.Lock()

    def resume(n: int) -> None:
        outcome = store.resume_workflow("a", f"op{n}", 300.0)
        assert outcome is not None
        with lock:
            results.append(outcome[1])

    threads = [threading.Thread(target=resume, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    assert len(store.list_actions("a")) == 1


@covers("fork_workflow")
def test_fork_copies_the_first_steps_into_a_new_workflow(store: Store) -> None:
    lease = running(store, "a")
    for position in ("0", "1", "2"):
        store.record_step("a", lease, step(position)).result()
    fork = new("b", at=400.0, version="2")
    forked = store.fork_workflow("a", fork, 2, "fork", "bob", 400.0)
    assert forked is not None
    record, created = forked
    assert created and record.status == "PENDING" and record.owner is None
    assert (record.forked_from, record.forked_steps, record.app_version) == ("a", 2, "2")
    assert record.epoch == 1  # as if owned once: its first claim reads its steps
    assert store.load_steps("b") == store.load_steps("a")[:2]
    # The original is untouched.
    assert len(store.load_steps("a")) == 3
    (action,) = store.list_actions("a")
    assert (action.action, action.target_id, action.actor) == ("fork", "b", "bob")
    # The ID taken: nothing copied, nothing logged.
    again = store.fork_workflow("a", fork, 3, "fork", "bob", 401.0)
    assert again is not None and again[1] is False and len(store.load_steps("b")) == 2
    assert len(store.list_actions()) == 1
    # From step 0 (a restart): no step; more steps than recorded: all of them.
    restarted = store.fork_workflow("a", new("c"), 0, "restart", "bob", 402.0)
    assert restarted is not None and restarted[1] and store.load_steps("c") == []
    assert store.fork_workflow("a", new("d"), 99, "fork", "bob", 403.0) is not None
    assert len(store.load_steps("d")) == 3
    assert store.fork_workflow("nope", new("e"), 1, "fork", "bob", 404.0) is None
    assert store.get_workflow("e") is None


@covers("log_action", "list_actions", "cancel_workflow", "send_message")
def test_the_actions_log_is_ordered_and_filtered(store: Store) -> None:
    running(store, "a")
    running(store, "b")
    first = store.log_action("a", "note", "carol", '{"x": 1}', 10.0)
    second = store.log_action("b", "note", "carol", "{}", 11.0, target_id="a")
    assert second > first
    # An operator's cancel and send are logged in their own transaction.
    assert store.cancel_workflow("a", 12.0, actor="dave") == ["a"]
    assert store.send_message("b", "t", '"hi"', None, 13.0, actor="erin").result() is True
    # Without an actor (a workflow's own cancel or send) nothing is logged.
    assert store.send_message("b", "t", '"hi"', None, 14.0).result() is True
    every = store.list_actions()
    assert [a.action for a in every] == ["note", "note", "cancel", "send"]
    assert json.loads(every[2].details) == {"asked": ["a"]}
    assert json.loads(every[3].details) == {"bytes": 4, "idempotency_key": None, "topic": "t"}
    assert [a.seq for a in store.list_actions("a")] == [first, every[2].seq]
    assert [a.seq for a in store.list_actions(after=first, limit=2)] == [second, every[2].seq]


@covers("list_events", "list_messages", "list_children")
def test_inspection_lists_events_messages_and_children(store: Store) -> None:
    lease = running(store, "p")
    record = StepRecord("0", "perdure.set_event", "SUCCEEDED", '"v1"', None, 1, None, 5.0)
    assert store.set_event("p", lease, record, "k").result()
    events = store.list_events("p")
    assert [(e.key, e.value) for e in events] == [("k", '"v1"')]
    store.send_message("p", "t", '"m1"', "key1", 6.0).result()
    store.send_message("p", "t", '"m2"', None, 7.0).result()
    taken = store.consume_message("p", lease, "t", step("1"), 8.0).result()
    assert taken == (True, '"m1"', None)
    every = store.list_messages("p")
    assert [(m.payload, m.idempotency_key, m.consumed_at) for m in every] == [
        ('"m1"', "key1", 8.0),
        ('"m2"', None, None),
    ]
    assert [m.payload for m in store.list_messages("p", pending_only=True)] == ['"m2"']
    store.create_workflow(new("c2", at=3.0, parent_id="p"), None, None).result()
    store.create_workflow(new("c1", at=2.0, parent_id="p"), None, None).result()
    assert [c.id for c in store.list_children("p")] == ["c1", "c2"]
    assert store.list_children("c1") == [] and store.list_events("c1") == []


@covers("list_workflows")
@pytest.mark.parametrize("newest_first", [True, False])
def test_listing_pages_cover_every_row_once(store: Store, newest_first: bool) -> None:
    # Equal creation times: the ID breaks the tie, so no row is skipped or repeated.
    for n in range(23):
        wf = new(f"w{n:02d}", at=float(n // 5), name="a" if n % 2 else "b")
        store.create_workflow(wf, None, None).result()
    for filters in ({}, {"name": "a"}, {"status": "PENDING", "created_after": 0.5}):
        seen: list[str] = []
        after = None
        while True:
            page = store.list_workflows(limit=4, newest_first=newest_first, after=after, **filters)  # type: ignore[arg-type]
            seen += [r.id for r in page]
            if len(page) < 4:
                break
            after = (page[-1].created_at, page[-1].id)
        expected = store.list_workflows(limit=100, newest_first=newest_first, **filters)  # type: ignore[arg-type]
        assert seen == [r.id for r in expected] and len(set(seen)) == len(seen)
        keys = [(r.created_at, r.id) for r in expected]
        assert keys == sorted(keys, reverse=newest_first)


@covers("force_open_breaker", "close_breaker")
def test_an_operator_opens_a_breaker_whatever_its_state(store: Store) -> None:
    store.force_open_breaker("pay", 10.0, 70.0, "opened by alice")
    record = store.get_breaker("pay")
    assert record is not None
    assert (record.state, record.opened_at, record.retry_at, record.last_error) == (
        "OPEN",
        10.0,
        70.0,
        "opened by alice",
    )
    # Its cool-down ends at retry_at: a probe attempt may then run, as after any opening.
    assert not store.claim_breaker_probe("pay", "w#1", 69.0, 100.0)
    assert store.claim_breaker_probe("pay", "w#1", 70.0, 100.0)
    # Forced open again while HALF_OPEN: the probe holder is dropped.
    store.force_open_breaker("pay", 80.0, 90.0, "again")
    again = store.get_breaker("pay")
    assert again is not None and again.state == "OPEN" and again.probe_holder is None
    assert store.close_breaker("pay", 81.0) == 0
    closed = store.get_breaker("pay")
    assert closed is not None and closed.state == "CLOSED"


@covers("suspend_workflow", "cancel_workflow")
def test_a_cancel_that_came_while_running_wakes_the_suspension(store: Store) -> None:
    lease = running(store, "a")
    # Owned and running: the cancel wakes nothing; the executor is told by its heartbeat.
    assert store.cancel_workflow("a", 10.0, actor="ops") == ["a"]
    # It suspends before hearing of it: it must not sleep through the request.
    assert store.suspend_workflow("a", lease, 500.0, "topic", 11.0).result()
    record = store.get_workflow("a")
    assert record is not None and record.owner is None and record.wake_at == 11.0
    (claimed,) = store.claim_workflows("w2", ["checkout"], "1", 11.0, 30.0)
    assert claimed.id == "a" and claimed.cancel_requested_at == 10.0


@covers("suspend_workflow", "cancel_workflow")
def test_a_cancel_already_delivered_does_not_wake_the_cleanups_wait(store: Store) -> None:
    lease = running(store, "a")
    assert store.cancel_workflow("a", 10.0, actor="ops") == ["a"]
    # The run raised the cancel and its cleanup now sleeps: it wakes at its time, not at
    # once (it would replay again and again until the sleep ends).
    assert store.suspend_workflow("a", lease, 500.0, None, 11.0, cancel_delivered=True).result()
    record = store.get_workflow("a")
    assert record is not None and record.owner is None and record.wake_at == 500.0
    assert store.claim_workflows("w2", ["checkout"], "1", 11.0, 30.0) == []
