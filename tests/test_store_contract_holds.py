"""The store contract for held workflows and app versions (see ``test_store_contract.py``);
run against every store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from store_contract import covers, new, running, step

from perdure.storage import Hold, Lease, Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def _hold(code: str = "old-code", retry_at: float = 3700.0) -> Hold:
    return Hold("1", "charge", "reserve", "1", code, 100.0, retry_at)


@covers("hold_workflow")
def test_hold_is_fenced_keeps_the_workflow_active_and_a_claim_clears_it(store: Store) -> None:
    lease = running(store, "a")
    assert store.record_step("a", lease, step("0")).result()
    assert store.suspend_workflow("a", lease, 900.0, "topic", 100.0).result() is True
    # A suspended workflow is no longer owned: the hold is refused like any stale write.
    assert not store.hold_workflow("a", lease, _hold(), "held: ...", 100.0).result()
    claimed = store.claim_workflows("me", ["checkout"], "1", 1000.0, 1015.0)
    assert [record.id for record in claimed] == ["a"]
    lease = Lease("me", claimed[0].epoch)
    assert not store.hold_workflow("a", Lease("me", 1), _hold(), "x", 1000.0).result()
    assert store.hold_workflow("a", lease, _hold(), "held: differs", 1000.0).result()
    record = store.get_workflow("a")
    assert record is not None
    assert (record.status, record.owner, record.lease_expires_at) == ("RUNNING", None, None)
    assert (record.wake_at, record.wait_topic, record.note) == (3700.0, None, "held: differs")
    assert record.held_code == "old-code"
    assert record.held_detail is not None and Hold.from_json(record.held_detail) == _hold()
    assert [s.position for s in store.load_steps("a")] == ["0"]  # the history is kept
    assert not store.record_step("a", lease, step("1")).result()  # nothing more recorded
    # Messages are kept, and do not wake it (it waits on no topic).
    assert store.send_message("a", "topic", '"m"', None, 1001.0).result() is True
    record = store.get_workflow("a")
    assert record is not None and record.wake_at == 3700.0
    # Not claimable before its recheck time; a claim then clears the hold.
    assert store.claim_workflows("me", ["checkout"], "1", 1002.0, 1017.0) == []
    claimed = store.claim_workflows("me", ["checkout"], "1", 3700.0, 3715.0)
    assert [(r.id, r.held_code, r.held_detail, r.note) for r in claimed] == [
        ("a", None, None, None)
    ]
    assert claimed[0].recoveries == 0  # waking a held workflow is not a recovery


@covers("release_holds")
def test_release_holds_makes_due_only_what_other_code_held(store: Store) -> None:
    for workflow_id, code in (("a", "old-code"), ("b", "new-code")):
        lease = running(store, workflow_id)
        assert store.hold_workflow(workflow_id, lease, _hold(code), "held", 100.0).result()
    lease = running(store, "c", version="2")
    assert store.hold_workflow("c", lease, _hold("old-code"), "held", 100.0).result()
    lease = running(store, "e", name="refund")
    assert store.hold_workflow("e", lease, _hold("refund-code"), "held", 100.0).result()
    running(store, "d")  # active, not held
    # An executor of version 1 whose codes are "new-code" (checkout) and "refund-code":
    # only "a" was held by other code than its own.
    codes = ["new-code", "refund-code"]
    assert store.release_holds(["checkout", "refund"], "1", codes, 200.0) == 1
    assert store.release_holds(["checkout", "refund"], "1", codes, 200.0) == 0  # due already
    assert store.release_holds(["other"], "1", ["x"], 200.0) == 0  # not its workflows
    woken = {r.id: r.wake_at for r in map(store.get_workflow, "abce") if r is not None}
    assert woken == {"a": 200.0, "b": 3700.0, "c": 3700.0, "e": 3700.0}
    claimed = store.claim_workflows("x", ["checkout", "refund"], "1", 200.0, 215.0)
    assert [record.id for record in claimed] == ["a"]
    # With no code given (an executor that registers none of them), every hold is other code.
    assert store.release_holds(["refund"], "1", [], 201.0) == 1


@covers("active_versions")
def test_active_versions_count_active_and_held_workflows_per_version(store: Store) -> None:
    assert store.active_versions() == []
    store.create_workflow(new("a", at=10.0, version="1"), None, None).result()
    store.create_workflow(new("b", at=20.0, version="1"), None, None).result()
    store.create_workflow(new("c", at=30.0, version="2"), None, None).result()
    lease = running(store, "d", at=5.0, version="2")
    assert store.hold_workflow("d", lease, _hold(), "held", 100.0).result()
    lease = running(store, "e", at=1.0, version="0")
    assert store.complete_workflow("e", lease, "SUCCEEDED", "1", None, 100.0).result()
    counts = [
        (v.app_version, v.active, v.held, v.oldest_created_at) for v in store.active_versions()
    ]
    assert counts == [("2", 2, 1, 5.0), ("1", 2, 0, 10.0)]


@covers("retry_held")
def test_retry_held_makes_a_held_workflow_due_whatever_code_held_it(store: Store) -> None:
    lease = running(store, "a")
    assert store.hold_workflow("a", lease, _hold(), "held", 100.0).result()
    running(store, "b")  # active, owned, not held
    assert store.retry_held("b", 200.0) is False
    assert store.retry_held("missing", 200.0) is False
    assert store.retry_held("a", 200.0) is True
    record = store.get_workflow("a")
    assert record is not None and record.wake_at == 200.0 and record.held_code == "old-code"
    claimed = store.claim_workflows("x", ["checkout"], "1", 200.0, 215.0)
    assert [(r.id, r.held_code) for r in claimed] == [("a", None)]
    assert store.retry_held("a", 300.0) is False  # claimed: no longer held
