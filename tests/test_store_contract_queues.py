"""The store contract for queues (see ``test_store_contract.py``); run against every store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from store_contract import covers, new

from perdure import Queue, Rate
from perdure._queue import Enqueue
from perdure.storage import Lease, Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def enqueue(store: Store, workflow_id: str, at: float = 100.0, **entry: object) -> tuple[str, bool]:
    entry.setdefault("queue", "q")
    record, created = store.enqueue_workflow(new(workflow_id, at=at), Enqueue(**entry)).result()  # type: ignore[arg-type]
    return record.id, created


def claim(store: Store, me: str = "me", now: float = 1000.0, limit: int = 100) -> list[str]:
    claimed = store.claim_queued(me, ["q"], ["checkout"], "1", now, now + 15.0, limit)
    return [record.id for record in claimed]


@covers("declare_queue", "get_queue", "list_queues", "update_queue")
def test_limits_are_stored_changed_and_redeclared(store: Store) -> None:
    declared = Queue("q", concurrency=3, rate=Rate(10, per=60))
    assert store.get_queue("q") is None and store.list_queues() == []
    assert store.declare_queue(declared, 1.0) == declared
    changed = store.update_queue("q", {"concurrency": 5, "key_concurrency": 1}, 2.0)
    assert changed == Queue("q", concurrency=5, key_concurrency=1, rate=Rate(10, 60.0))
    # The same declaration again (a restart) keeps what was changed since.
    assert store.declare_queue(declared, 3.0) == changed
    assert store.update_queue("q", {"rate": None}, 4.0) == Queue("q", 5, None, 1, None)
    # Another declaration (a deploy) replaces the limits.
    other = Queue("q", worker_concurrency=2)
    assert store.declare_queue(other, 5.0) == other == store.get_queue("q")
    assert store.update_queue("nope", {"concurrency": 1}, 6.0) is None
    store.declare_queue(Queue("a"), 7.0)
    assert [queue.name for queue in store.list_queues()] == ["a", "q"]


@covers("enqueue_workflow")
def test_enqueue_records_unowned_and_resolves_ids_duplicates_and_debounces(
    store: Store,
) -> None:
    store.declare_queue(Queue("q"), 1.0)
    assert enqueue(store, "a", key="k", priority=2, not_before=150.0) == ("a", True)
    record = store.get_workflow("a")
    assert record is not None
    assert (record.status, record.owner, record.epoch, record.wake_at) == (
        "PENDING",
        None,
        0,
        150.0,
    )
    assert (record.queue, record.queue_key, record.priority, record.dequeued_at) == (
        "q",
        "k",
        2,
        None,
    )
    assert enqueue(store, "a") == ("a", False)  # the same ID
    # Deduplication: per queue, among active workflows.
    assert enqueue(store, "d1", dedup_id="x") == ("d1", True)
    assert enqueue(store, "d2", dedup_id="x") == ("d1", False)
    assert enqueue(store, "d3", dedup_id="x", queue="other") == ("d3", True)
    assert enqueue(store, "d4", dedup_id="x", queue=None) == ("d4", True)
    [owned] = store.claim_queued("me", ["q"], ["checkout"], "1", 1000.0, 1015.0, 1)
    assert owned.id == "d1"
    assert store.complete_workflow("d1", Lease("me", 1), "SUCCEEDED", "1", None, 1001.0).result()
    assert enqueue(store, "d5", dedup_id="x") == ("d5", True)
    # Debounce: into the one not started yet, with the latest inputs and wake time.
    debounced = store.enqueue_workflow(
        new("b1", at=200.0), Enqueue("q", key="c", not_before=205.0, debounce=True)
    ).result()
    assert debounced[1]
    later = new("b2", at=203.0)
    later = type(later)(later.id, later.name, '{"args":[2]}', "json", "1", 203.0)
    record, created = store.enqueue_workflow(
        later, Enqueue("q", key="c", not_before=208.0, debounce=True)
    ).result()
    assert (record.id, created, record.inputs, record.wake_at) == (
        "b1",
        False,
        '{"args":[2]}',
        208.0,
    )
    assert store.get_workflow("b2") is None
    # Another key, another name or another queue is another window.
    assert enqueue(store, "b3", key="d", debounce=True, not_before=205.0)[1]


@covers("claim_queued")
def test_claims_obey_every_limit_and_order(store: Store) -> None:
    store.declare_queue(Queue("q", concurrency=3, worker_concurrency=2, key_concurrency=1), 1.0)
    for n, (key, priority) in enumerate(
        [("a", 0), ("a", 0), ("b", 1), ("c", 0), (None, 0), ("a", -1)]
    ):
        enqueue(store, f"w{n}", at=100.0 + n, key=key, priority=priority)
    # Not claimed outside its queue's claim.
    assert store.claim_workflows("me", ["checkout"], "1", 1000.0, 1015.0) == []
    # Lower priority first; one per key (a's first is w5, priority -1); 2 per worker.
    assert claim(store, "me") == ["w5", "w3"]
    assert claim(store, "me") == []  # its 2
    assert claim(store, "you") == ["w4"]  # the queue's 3
    assert claim(store, "you") == []
    # Every lease expired at 1015: the slots are free, those workflows wait again (in
    # their old places) and are recovered.
    recovered = store.claim_queued("you", ["q"], ["checkout"], "1", 1016.0, 1030.0, 100)
    assert [(r.id, r.epoch, r.recoveries, r.owner) for r in recovered] == [
        ("w5", 2, 1, "you"),
        ("w3", 2, 1, "you"),
    ]
    assert store.claim_queued("x", ["q"], ["other"], "1", 1016.0, 1030.0, 100) == []
    assert store.claim_queued("x", ["q"], ["checkout"], "2", 1016.0, 1030.0, 100) == []


@covers("claim_queued")
def test_claims_respect_the_rate_and_wake_due_workflows(store: Store) -> None:
    store.declare_queue(Queue("q", rate=Rate(2, per=10)), 1.0)
    for n in range(4):
        enqueue(store, f"w{n}", at=100.0 + n)
    enqueue(store, "late", at=104.0, not_before=1003.0)
    assert claim(store, now=1000.0) == ["w0", "w1"]
    assert claim(store, now=1005.0) == []  # 2 starts within (995, 1005]
    record = store.get_workflow("w0")
    assert record is not None and record.dequeued_at == 1000.0
    # A workflow that started before (here: its lease expired) does not use the rate.
    assert claim(store, "you", now=1016.0, limit=1) == ["w0"]
    assert store.get_workflow("w0").dequeued_at == 1000.0  # type: ignore[union-attr]
    assert store.get_workflow("w0").recoveries == 1  # type: ignore[union-attr]
    # w1 (its lease expired too) again, and two first starts: none in (1006, 1016].
    assert claim(store, "you", now=1016.0) == ["w1", "w2", "w3"]
    assert claim(store, "you", now=1027.0) == ["late"]  # its delay passed


@covers("queue_place")
def test_queue_place_says_where_a_waiting_workflow_stands(store: Store) -> None:
    store.declare_queue(Queue("q", concurrency=1, key_concurrency=1, rate=Rate(5, per=60)), 1.0)
    enqueue(store, "run", key="a")
    enqueue(store, "w1", at=101.0, key="a")
    enqueue(store, "w2", at=102.0, key="b")
    enqueue(store, "later", at=103.0, not_before=2000.0)
    assert claim(store) == ["run"]
    place = store.queue_place("w2", 1001.0)
    assert place is not None
    assert (place.position, place.running, place.running_key, place.recent_starts) == (1, 1, 0, 1)
    assert place.reason() == "concurrency"
    place = store.queue_place("w1", 1001.0)
    assert place is not None and (place.position, place.running_key) == (2, 1)
    assert place.reason() == "key limit"
    place = store.queue_place("later", 1001.0)
    assert place is not None and place.delayed_until == 2000.0 and place.position is None
    assert place.reason() == "delay"
    assert store.queue_place("run", 1001.0) is None  # it runs
    assert store.queue_place("nope", 1001.0) is None


@covers("queue_place")
def test_queue_place_says_when_a_full_rate_window_frees(store: Store) -> None:
    store.declare_queue(Queue("q", rate=Rate(2, per=60)), 1.0)
    for n in range(3):
        enqueue(store, f"w{n}", at=100.0 + n)
    assert claim(store, now=1000.0, limit=1) == ["w0"]
    place = store.queue_place("w2", 1010.0)
    # One start in the window: not full, nothing to wait for.
    assert place is not None and place.rate_frees_at is None and place.reason() == "worker"
    assert claim(store, now=1010.0, limit=1) == ["w1"]
    place = store.queue_place("w2", 1020.0)
    # Full: the oldest start (at 1000) leaves the window at 1060, and a claim then admits.
    assert place is not None and place.reason() == "rate" and place.rate_frees_at == 1060.0
    # (w0 and w1 are claimed again: their leases expired; they do not use the rate.)
    assert "w2" not in claim(store, now=1059.0)
    assert claim(store, now=1060.0) == ["w2"]


@covers("cancelled_waiting", "cancel_waiting")
def test_a_queued_workflow_cancelled_before_it_started_ends_without_running(
    store: Store,
) -> None:
    store.declare_queue(Queue("q", concurrency=1), 1.0)
    for n, workflow_id in enumerate(("run", "wait", "late")):
        enqueue(store, workflow_id, at=100.0 + n)
    enqueue(store, "solo", queue=None, not_before=5000.0)
    assert claim(store) == ["run"]
    for workflow_id in ("run", "wait", "solo"):
        assert store.cancel_workflow(workflow_id, 1001.0) == [workflow_id]
    # Only those of these queues that never started: "run" is told at its next step,
    # "solo" (no queue) wakes and is claimed to be told.
    assert store.cancelled_waiting(["q"]) == ["wait"]
    assert store.cancelled_waiting(["other"]) == []
    assert store.cancel_waiting("wait", '{"type": "x"}', 1002.0)
    record = store.get_workflow("wait")
    assert record is not None
    assert (record.status, record.error, record.finished_at) == (
        "CANCELLED",
        '{"type": "x"}',
        1002.0,
    )
    assert store.load_steps("wait") == []
    assert not store.cancel_waiting("wait", "{}", 1003.0)  # once
    assert not store.cancel_waiting("run", "{}", 1003.0)  # it started
    assert not store.cancel_waiting("late", "{}", 1003.0)  # not asked
    assert store.cancelled_waiting(["q"]) == []
