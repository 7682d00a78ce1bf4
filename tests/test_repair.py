"""Repairing and seeing workflows (issue 12): resume, fork, restart, bulk forms, the
operator actions log, ``app.inspect`` and listing pages; on both stores."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

import perdure
from perdure import InvalidValueError, WorkflowNotFoundError, WorkflowNotResumableError


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def define_flaky(app: perdure.App, runs: list[str], broken: dict[str, bool]) -> Callable[..., str]:
    """A workflow: ``prepare`` then ``charge`` (which fails while ``broken["charge"]``)."""

    @app.step
    def prepare(order: str) -> str:
        runs.append("prepare")
        return f"prepared {order}"

    @app.step(retry=perdure.Retry(max_attempts=2, initial_interval=0.01))
    def charge(order: str) -> str:
        runs.append("charge")
        if broken["charge"]:
            raise RuntimeError("card service down")
        return f"charged {order}"

    @app.workflow
    def checkout(order: str) -> str:
        return f"{prepare(order)}, {charge(order)}"

    return checkout


def test_resume_continues_a_failed_workflow_from_its_recorded_steps(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    runs: list[str] = []
    broken = {"charge": True}
    checkout = define_flaky(app, runs, broken)
    with app:
        handle = app.options(workflow_id="order-1").start(checkout, "o1")
        with pytest.raises(RuntimeError, match="card service down"):
            handle.result(timeout=15)
        assert runs == ["prepare", "charge", "charge"]
        failed = app.inspect("order-1")
        assert failed.status == "FAILED" and failed.error is not None
        assert "card service down" in (failed.error["traceback"] or "")
        broken["charge"] = False
        resumed = app.resume("order-1", actor="alice")
        assert resumed.workflow_id == "order-1"
        assert resumed.result(timeout=15) == "prepared o1, charged o1"
    # prepare was not run again; charge ran afresh, with a new attempt budget.
    assert runs == ["prepare", "charge", "charge", "charge"]
    detail = app.inspect("order-1")
    assert detail.status == "SUCCEEDED" and detail.resumes == 1 and detail.error is None
    assert [(s.name, s.status, s.attempts) for s in detail.steps] == [
        ("define_flaky.prepare", "SUCCEEDED", 1),
        ("define_flaky.charge", "SUCCEEDED", 1),
    ]
    # The earlier outcome is kept in its history.
    (action,) = detail.actions
    assert action["action"] == "resume" and action["actor"] == "alice"
    assert action["details"]["replaced"]["status"] == "FAILED"
    assert "card service down" in action["details"]["replaced"]["error"]
    # Steps are timed.
    for step in detail.steps:
        assert step.started_at is not None and step.ended_at is not None
        assert step.started_at <= step.ended_at


def test_resume_a_cancelled_workflow_and_refusals(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()

    @app.step
    def first() -> str:
        return "a"

    @app.workflow
    def waiter() -> str:
        value = first()
        return f"{value}-{perdure.recv('go', timeout=60)}"

    with app:
        handle = app.options(workflow_id="w").start(waiter)
        wait_for(lambda: app.inspect("w").waiting_for is not None)
        assert app.cancel("w", actor="bob")
        with pytest.raises(perdure.WorkflowCancelledError):
            handle.result(timeout=15)
        app.resume("w")
        wait_for(lambda: app.inspect("w").waiting_for is not None)
        # Running again: not resumable, nothing changes.
        with pytest.raises(WorkflowNotResumableError, match="RUNNING"):
            app.resume("w")
        app.send("w", "now", topic="go", actor="carol")
        assert handle.result(timeout=15) == "a-now"
        with pytest.raises(WorkflowNotResumableError, match="SUCCEEDED"):
            app.resume("w")
        with pytest.raises(WorkflowNotFoundError):
            app.resume("nope")
    actions = [(a["action"], a["actor"]) for a in app.inspect("w").actions]
    assert actions[0] == ("cancel", "bob") and actions[2] == ("send", "carol")
    assert actions[1][0] == "resume" and actions[1][1]  # the OS user by default


def test_fork_replays_the_first_steps_and_runs_the_current_code_from_there(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    runs: list[str] = []
    version = {"n": 1}

    @app.step
    def one() -> int:
        runs.append("one")
        return 1

    @app.step
    def two() -> int:
        runs.append("two")
        return 2

    @app.step
    def three() -> int:
        runs.append("three")
        return 3 * version["n"]

    @app.workflow
    def sums() -> int:
        return one() + two() + three()

    with app:
        assert app.options(workflow_id="orig").run(sums) == 6
        version["n"] = 10  # the bug fix
        forked = app.fork("orig", from_step=2, workflow_id="fixed", actor="dan")
        assert forked.workflow_id == "fixed"
        assert forked.result(timeout=15) == 33
        assert runs == ["one", "two", "three", "three"]
        restarted = app.restart("orig")
        assert restarted.result(timeout=15) == 33
        assert runs[4:] == ["one", "two", "three"]
        with pytest.raises(InvalidValueError, match="3 recorded step"):
            app.fork("orig", from_step=4)
        with pytest.raises(InvalidValueError, match="taken"):
            app.fork("orig", from_step=1, workflow_id="fixed")
        with pytest.raises(WorkflowNotFoundError):
            app.fork("nope", from_step=0)
    detail = app.inspect("fixed")
    assert (detail.forked_from, detail.forked_steps) == ("orig", 2)
    origin = app.inspect("orig")
    assert [(a["action"], a["target_id"]) for a in origin.actions] == [
        ("fork", "fixed"),
        ("restart", restarted.workflow_id),
    ]


def test_async_forms(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()
    runs: list[str] = []
    broken = {"charge": True}
    checkout = define_flaky(app, runs, broken)

    async def main() -> None:
        handle = await app.options(workflow_id="a1").start_async(checkout, "x")
        with pytest.raises(RuntimeError):
            await handle.result_async(timeout=15)
        broken["charge"] = False
        resumed = await app.resume_async("a1")
        assert await resumed.result_async(timeout=15) == "prepared x, charged x"
        forked = await app.fork_async("a1", 1)
        assert await forked.result_async(timeout=15) == "prepared x, charged x"
        restarted = await app.restart_async("a1", "a3")
        assert await restarted.result_async(timeout=15) == "prepared x, charged x"
        detail = await app.inspect_async("a3")
        assert detail.forked_from == "a1"

    with app:
        asyncio.run(main())


NAME = "define_flaky.checkout"


def test_bulk_resume_and_cancel_by_filter(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()
    runs: list[str] = []
    broken = {"charge": True}
    checkout = define_flaky(app, runs, broken)

    @app.workflow
    def idle() -> str:
        return str(perdure.recv(timeout=600))

    with app:
        for n in range(3):
            handle = app.options(workflow_id=f"f{n}").start(checkout, str(n))
            with pytest.raises(RuntimeError):
                handle.result(timeout=15)
        for n in range(2):
            app.options(workflow_id=f"i{n}").start(idle)
        with pytest.raises(InvalidValueError, match="only FAILED, CANCELLED"):
            app.resume_many(status="running")
        broken["charge"] = False
        resumed = app.resume_many(status="failed", name=NAME, actor="ops")
        assert resumed == ["f0", "f1", "f2"]
        for n in range(3):
            assert app.retrieve(f"f{n}").result(timeout=15) == f"prepared {n}, charged {n}"
        assert app.resume_many(name=NAME) == []
        asked = app.cancel_many(name=app.registry.workflow(idle).name, actor="ops")
        assert sorted(asked) == ["i0", "i1"]
        for n in range(2):
            with pytest.raises(perdure.WorkflowCancelledError):
                app.retrieve(f"i{n}").result(timeout=15)
    actions = app.store.list_actions()
    assert [a.action for a in actions].count("resume") == 3
    assert [a.action for a in actions].count("cancel") == 2


def test_a_resume_racing_other_workers_runs_the_workflow_once(
    make_app: Callable[..., perdure.App],
) -> None:
    """Three processes' worth of apps race: two operators resume at once while two
    workers wait to claim. One resume wins, the other is refused; the failed step runs
    once more, on one worker; the epoch fences out anything older."""
    runs: list[str] = []
    lock = threading.Lock()
    broken = {"charge": True}
    apps = [make_app(), make_app()]
    workflows = []
    for app in apps:

        @app.step
        def charge(order: str) -> str:
            with lock:
                runs.append(order)
            if broken["charge"]:
                raise RuntimeError("down")
            return "ok"

        @app.workflow
        def pay(order: str) -> str:
            return charge(order)

        workflows.append(pay)

    first, second = apps
    with first, second:
        handle = first.options(workflow_id="race").start(workflows[0], "r")
        with pytest.raises(RuntimeError):
            handle.result(timeout=15)
        epoch = first.store.get_workflow("race").epoch  # type: ignore[union-attr]
        broken["charge"] = False
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def operator(app: perdure.App, who: str) -> None:
            barrier.wait()
            try:
                app.resume("race", actor=who)
                outcomes.append("resumed")
            except WorkflowNotResumableError:
                outcomes.append("refused")

        threads = [
            threading.Thread(target=operator, args=(app, f"op{n}")) for n, app in enumerate(apps)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["refused", "resumed"]
        assert second.retrieve("race").result(timeout=15) == "ok"
        time.sleep(0.3)  # a second run, if any, would show by now
    assert runs == ["r", "r"]
    record = first.store.get_workflow("race")
    assert record is not None and record.epoch >= epoch + 2  # resumed (+1), claimed (+1)
    assert [a.action for a in first.store.list_actions("race")] == ["resume"]


def test_listing_pages_and_inspection(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()

    @app.workflow
    def child(n: int) -> int:
        return n

    @app.workflow
    def parent() -> int:
        perdure.set_event("stage", {"at": "children"})
        total = app.options(workflow_id="kid").start(child, 7).result()
        return total + int(perdure.recv("more", timeout=60))

    with app:
        app.options(workflow_id="p").start(parent)
        wait_for(lambda: app.inspect("p").waiting_for is not None)
        app.send("p", 1, topic="other")  # not what it waits for: stays waiting
        detail = app.inspect("p")
        assert detail.events == {"stage": {"at": "children"}}
        assert [(c["workflow_id"], c["status"]) for c in detail.children] == [("kid", "SUCCEEDED")]
        assert [m["topic"] for m in detail.messages_waiting] == ["other"]
        assert app.inspect("kid").inputs == {"args": [7], "kwargs": {}}
        assert detail.owner is None and not detail.owner_alive  # suspended
        assert "more" in (detail.waiting_for or "")
        assert app.inspect("kid").parent_id == "p"
        app.send("p", 2, topic="more")
        assert app.retrieve("p").result(timeout=15) == 9
        for n in range(5):
            app.options(workflow_id=f"c{n}").run(child, n)
    names = {"child": 6, "parent": 1}
    seen: list[str] = []
    cursor = None
    while True:
        name = app.registry.workflow(child).name
        page = app.list_page(name=name, status="succeeded", limit=2, cursor=cursor)
        seen += [item.workflow_id for item in page.workflows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == names["child"] == len(set(seen)) and seen[0] == "c4"
    with pytest.raises(InvalidValueError, match="cursor"):
        app.list_page(cursor="garbage!")
    with pytest.raises(InvalidValueError, match="unknown workflow status"):
        app.list_page(status="sleeping")


def test_an_operator_opens_and_closes_a_breaker(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()
    breaker = perdure.CircuitBreaker("payments", cooldown=600)
    calls: list[str] = []

    @app.step(breaker=breaker)
    def pay(order: str) -> str:
        calls.append(order)
        return f"paid {order}"

    @app.workflow
    def order(order_id: str) -> str:
        return pay(order_id)

    with app:
        app.open_breaker(breaker, 600, actor="ops")
        assert app.breaker("payments").state == "OPEN"
        handle = app.options(workflow_id="o").start(order, "o")
        wait_for(lambda: "payments" in (app.inspect("o").waiting_for or ""))
        assert calls == []  # parked: not called while open
        assert app.close_breaker("payments", actor="ops") == 1
        assert handle.result(timeout=15) == "paid o"
    assert [a.action for a in app.store.list_actions("perdure.breaker:payments")] == [
        "open_breaker",
        "close_breaker",
    ]
