"""The store contract for listing by queue, queue depths and operator actions on schedules
and queues (see ``test_store_contract.py``); run against every store."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from store_contract import covers, new

from perdure import Queue, Rate
from perdure._queue import Enqueue, QueueDepth
from perdure._schedules import ScheduleSpec
from perdure.storage import Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def enqueue(
    store: Store, workflow_id: str, queue: str, key: str | None, at: float, **entry: object
) -> None:
    record, created = store.enqueue_workflow(
        new(workflow_id, at=at),
        Enqueue(queue=queue, key=key, **entry),  # type: ignore[arg-type]
    ).result()
    assert created and record.id == workflow_id


@covers("list_workflows", "queue_depths")
def test_listing_by_queue_and_key_and_each_queues_depth(store: Store) -> None:
    for name in ("emails", "sms"):
        store.declare_queue(Queue(name), 1.0)
    enqueue(store, "e1", "emails", "alice", 101.0)
    enqueue(store, "e2", "emails", "bob", 102.0)
    enqueue(store, "e3", "emails", "alice", 103.0)
    enqueue(store, "e4", "emails", "alice", 104.0, not_before=5000.0)  # delayed
    enqueue(store, "s1", "sms", "alice", 105.0)
    store.create_workflow(new("plain", at=106.0), None, None).result()

    def ids(**filters: object) -> list[str]:
        return [r.id for r in store.list_workflows(**filters)]  # type: ignore[arg-type]

    assert ids(queue="emails") == ["e4", "e3", "e2", "e1"]
    assert ids(queue="emails", key="alice") == ["e4", "e3", "e1"]
    assert ids(queue="emails", key="alice", newest_first=False, limit=2) == ["e1", "e3"]
    # Pages past a (created_at, id), as with every other filter.
    assert ids(queue="emails", key="alice", after=(104.0, "e4")) == ["e3", "e1"]
    assert ids(queue="sms", key="alice") == ["s1"]
    assert ids(queue="emails", key="carol") == [] and ids(queue="none") == []
    assert ids(queue="emails", status="PENDING", name="checkout", created_after=101.5) == [
        "e4",
        "e3",
        "e2",
    ]
    # Depths: one runs (claimed, lease alive), the others wait, one is delayed.
    [claimed] = store.claim_queued("me", ["emails"], ["checkout"], "1", 1000.0, 1015.0, 1)
    assert claimed.id == "e1"
    depths = store.queue_depths(1000.0)
    assert depths == {
        "emails": QueueDepth(running=1, waiting=2, delayed=1),
        "sms": QueueDepth(running=0, waiting=1, delayed=0),
    }
    # Its owner's lease expired: it waits again (another worker must run it).
    assert store.queue_depths(2000.0)["emails"] == QueueDepth(running=0, waiting=3, delayed=1)
    # Past its delay, the delayed one waits too.
    assert store.queue_depths(6000.0)["emails"] == QueueDepth(0, 4, 0)


def _logged(store: Store, subject: str) -> list[tuple[str, str, float, dict[str, object]]]:
    return [(a.action, a.actor, a.at, json.loads(a.details)) for a in store.list_actions(subject)]


@covers("put_schedule", "pause_schedule", "delete_schedule")
def test_schedule_changes_by_an_operator_are_logged_in_their_transaction(store: Store) -> None:
    subject = "perdure.schedule:report"
    spec = ScheduleSpec("report", "checkout", "*/5 * * * *", tz="Europe/Paris")
    store.put_schedule(spec, "code", 10.0)  # an executor writing the code's: not logged
    assert store.list_actions(subject) == []
    store.put_schedule(spec, "api", 20.0, "alice")
    assert store.pause_schedule("report", True, 30.0, "bob") is True
    assert store.pause_schedule("report", True, 31.0, "bob") is False  # no change: no entry
    assert store.pause_schedule("report", False, 40.0, "carol") is True
    assert store.pause_schedule("nope", True, 41.0, "carol") is None
    assert store.delete_schedule("report", 50.0, "dave") is True
    assert store.delete_schedule("report", 51.0, "dave") is False
    definition = {
        "workflow": "checkout",
        "cron": "*/5 * * * *",
        "tz": "Europe/Paris",
        "catch_up": "skip",
        "grace": 60.0,
    }
    assert _logged(store, subject) == [
        ("create_schedule", "alice", 20.0, definition),
        ("pause_schedule", "bob", 30.0, {}),
        ("resume_schedule", "carol", 40.0, {}),
        ("delete_schedule", "dave", 50.0, {}),
    ]
    # Nothing logged under another name, nor under a workflow's ID.
    assert store.list_actions("perdure.schedule:nope") == []


@covers("update_queue")
def test_a_queue_update_by_an_operator_is_logged_with_the_limits_before_and_after(
    store: Store,
) -> None:
    store.declare_queue(Queue("emails", concurrency=3), 1.0)
    store.update_queue("emails", {"concurrency": 5}, 2.0)  # no actor: not logged
    changed = store.update_queue(
        "emails", {"rate": Rate(10, 60.0), "concurrency": None}, 3.0, "ops"
    )
    assert changed == Queue("emails", rate=Rate(10, 60.0))
    assert store.update_queue("nope", {"concurrency": 1}, 4.0, "ops") is None
    limits = {
        "concurrency": None,
        "worker_concurrency": None,
        "key_concurrency": None,
        "rate": None,
    }
    assert _logged(store, "perdure.queue:emails") == [
        (
            "update_queue",
            "ops",
            3.0,
            {
                "before": {**limits, "concurrency": 5},
                "after": {**limits, "rate": {"limit": 10, "per": 60.0}},
            },
        )
    ]
    assert store.list_actions("perdure.queue:nope") == []
