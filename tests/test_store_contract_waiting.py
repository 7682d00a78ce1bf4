"""The store contract, second half (see ``test_store_contract.py``): waiting, messages,
events, cancellation, continue-as-new, circuit breakers, and the keys every store
accepts; run against every store."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from store_contract import covers, new, running, step

from perdure import ConfigurationError
from perdure.storage import BREAKER_TOPIC, CHILD_TOPIC, Lease, StepRecord, Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


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
        None,
    )
    assert store.consume_message("a", lease, "t", recv("0"), 110.0).result() == (True, '"m0"', None)
    assert store.consume_message("a", lease, "t", recv("0"), 111.0).result() == (False, None, None)
    assert store.consume_message("a", lease, "t", recv("1"), 112.0).result() == (True, '"m1"', None)
    # A WAITING record at the position is replaced by the message's.
    assert store.record_step("a", lease, step("2", "WAITING", None)).result()
    assert store.consume_message("a", lease, "t", recv("2"), 113.0).result() == (True, '"m2"', None)
    assert store.consume_message("a", lease, "t", recv("3"), 114.0).result() == (True, None, None)
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
    assert store.consume_message("a", lease, "t", recv, 111.0).result() == (True, '"kept"', None)
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
