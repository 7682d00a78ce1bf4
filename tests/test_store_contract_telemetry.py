"""The store contract for what observability reads and keeps (see ``test_store_contract.py``):
the trace context stored with a workflow and a message, and the count of suspended
workflows; run against every store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from store_contract import covers, new, running, step

from perdure.storage import Hold, Lease, StepRecord, Store, open_store

TRACE = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


@covers("create_workflow", "claim_workflows", "send_message", "consume_message")
def test_the_trace_context_is_kept_with_a_workflow_and_each_message(store: Store) -> None:
    created, _ = store.create_workflow(replace(new("a"), trace_context=TRACE), None, None).result()
    assert created.trace_context == TRACE
    (claimed,) = store.claim_workflows("me", ["checkout"], "1", 200.0, 215.0)
    assert claimed.trace_context == TRACE
    again = store.get_workflow("a")
    assert again is not None and again.trace_context == TRACE
    untraced, _ = store.create_workflow(new("b"), None, None).result()
    assert untraced.trace_context is None
    assert store.send_message("a", "t", '"traced"', None, 201.0, trace_context=TRACE).result()
    assert store.send_message("a", "t", '"plain"', None, 202.0).result()
    lease = Lease("me", claimed.epoch)
    take = StepRecord("0", "perdure.recv", "SUCCEEDED", None, None, 1, None, 0.0)
    assert store.consume_message("a", lease, "t", take, 203.0).result() == (
        True,
        '"traced"',
        TRACE,
    )
    take = replace(take, position="1")
    assert store.consume_message("a", lease, "t", take, 204.0).result() == (True, '"plain"', None)


@covers("count_suspended")
def test_suspended_workflows_are_counted_by_name(store: Store) -> None:
    assert store.count_suspended(100.0) == {}
    for workflow_id, name, wake_at in (
        ("a", "checkout", 900.0),
        ("b", "checkout", 150.0),
        ("c", "refund", 900.0),
    ):
        lease = running(store, workflow_id, name=name)
        assert store.suspend_workflow(workflow_id, lease, wake_at, None, 100.0).result()
    running(store, "running")  # owned and running: not suspended
    store.create_workflow(new("pending"), None, None).result()  # waits for a claim
    held = running(store, "held")
    assert store.record_step("held", held, step("0")).result()
    hold = Hold("1", "s", "t", "1", "code", 100.0, 3700.0)
    assert store.hold_workflow("held", held, hold, "held", 100.0).result()
    done = running(store, "done")
    assert store.complete_workflow("done", done, "SUCCEEDED", "1", None, 100.0).result()
    assert store.count_suspended(120.0) == {"checkout": 2, "refund": 1}
    # Past its wake time a workflow is due (claimable), no longer suspended.
    assert store.count_suspended(200.0) == {"checkout": 1, "refund": 1}
