"""Issue 10 defects in the engine: BaseException from steps and workflows, waiting twice
for a finished child, deadlines that reach children, and events from steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

import perdure


class Boom(BaseException):
    """A user's own BaseException."""


def test_a_step_raising_a_base_exception_is_a_failed_attempt(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    calls: list[str] = []

    @app.step(retry=perdure.Retry(max_attempts=3, initial_interval=0.01, retry_on=(Boom,)))
    def boom() -> None:
        calls.append("boom")
        raise Boom("out of the blue")

    @app.step
    def interrupt() -> None:
        calls.append("interrupt")
        raise KeyboardInterrupt

    @app.workflow(name="booming")
    def booming() -> None:
        boom()

    @app.workflow(name="interrupted")
    async def interrupted() -> None:
        await perdure.sleep_async(0)
        interrupt()

    with app:
        with pytest.raises(perdure.PerdureError, match="out of the blue"):
            app.run(booming, workflow_id="boom")
        with pytest.raises(perdure.PerdureError, match="KeyboardInterrupt"):
            app.run(interrupted, workflow_id="interrupt")
        boomed = app.retrieve("boom").status()
        interrupted_status = app.retrieve("interrupt").status()
    assert calls == ["boom", "boom", "boom", "interrupt"]
    assert boomed.status == "FAILED"
    assert [(s.status, s.attempts) for s in boomed.steps] == [("FAILED", 3)]
    assert interrupted_status.status == "FAILED"
    assert interrupted_status.steps[-1].status == "FAILED"


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit, Boom])
def test_a_workflow_raising_a_base_exception_fails(
    make_app: Callable[..., perdure.App], raised: type[BaseException]
) -> None:
    app = make_app()

    @app.workflow(name="sync_raiser")
    def sync_raiser() -> None:
        raise raised("from the workflow")

    @app.workflow(name="async_raiser")
    async def async_raiser() -> None:
        raise raised("from the workflow")

    with app:
        for name in ("sync_raiser", "async_raiser"):
            with pytest.raises(perdure.WorkflowFailedError, match="from the workflow"):
                app.run(name, workflow_id=name)  # type: ignore[call-overload]
            assert app.retrieve(name).status().status == "FAILED"


def test_waiting_twice_for_a_finished_child_returns_both_times(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="kid")
    def kid() -> str:
        return "done"

    @app.workflow(name="twice")
    def twice() -> list[str]:
        first = app.start(kid, workflow_id="kid-1").result()
        second = app.start(kid, workflow_id="kid-1").result()
        return [first, second]

    @app.workflow(name="twice_async")
    async def twice_async() -> list[str]:
        first = await (await app.start_async(kid, workflow_id="kid-2")).result_async()
        second = await (await app.start_async(kid, workflow_id="kid-2")).result_async()
        return [first, second]

    with app:
        assert app.run(twice, workflow_id="twice") == ["done", "done"]
        assert app.run(twice_async, workflow_id="twice-async") == ["done", "done"]


def test_a_deadline_reaches_the_children(make_app: Callable[..., perdure.App]) -> None:
    app = make_app(suspend_after=0.3)

    @app.workflow(name="forever")
    def forever() -> None:
        perdure.recv(timeout=3600)

    @app.workflow(name="patient")
    def patient() -> None:
        # Its own timeout is later than the parent's deadline: the earlier one wins.
        app.start(forever, workflow_id="patient-child-a")
        app.start(forever, workflow_id="patient-child-b", timeout=3600)
        perdure.recv(timeout=3600)

    @app.workflow(name="patient_async")
    async def patient_async() -> None:
        await app.start_async(forever, workflow_id="patient-child-c")
        await perdure.recv_async(timeout=3600)

    with app:
        began = time.time()
        parent = app.start(patient, workflow_id="patient", timeout=1)
        parent_async = app.start(patient_async, workflow_id="patient-async", timeout=1)
        with pytest.raises(perdure.DeadlineExceededError):
            parent.result(timeout=20)
        with pytest.raises(perdure.DeadlineExceededError):
            parent_async.result(timeout=20)
        for child in ("patient-child-a", "patient-child-b", "patient-child-c"):
            with pytest.raises(perdure.DeadlineExceededError):
                app.retrieve(child).result(timeout=20)
        parent_deadline = app.store.get_workflow("patient")
        child_record = app.store.get_workflow("patient-child-b")
    assert time.time() - began < 15
    assert parent_deadline is not None and child_record is not None
    assert child_record.deadline_at == parent_deadline.deadline_at


def test_set_event_in_a_step_is_refused(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()

    @app.step
    def publishing() -> None:
        perdure.set_event("k", 1)

    @app.workflow(name="publisher")
    def publisher() -> str:
        try:
            publishing()
        except perdure.ConfigurationError as exc:
            return str(exc)
        return "published"

    with app:
        message = app.run(publisher, workflow_id="publisher")
        assert app.get_event("publisher", "k") is None
    assert "steps can't publish events" in message
    assert "'publisher'" in message


def test_a_deferred_start_under_a_taken_id_fails_the_async_workflow(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="one")
    async def one() -> int:
        return 1

    @app.workflow(name="other")
    async def other() -> int:
        return 2

    @app.workflow(name="clash")
    async def clash() -> str:
        app.start(other, workflow_id="taken")  # does not wait: the clash shows later
        try:
            await perdure.sleep_async(0)
        except perdure.ConfigurationError as exc:
            return str(exc)
        return "no clash"

    with app:
        app.run(one, workflow_id="taken")
        assert "already belongs to a 'one' workflow" in app.run(clash, workflow_id="clash")


def test_results_in_async_workflows_refuse_the_blocking_form(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="leaf")
    async def leaf() -> int:
        return 1

    @app.workflow(name="blocking_wait")
    async def blocking_wait() -> Any:
        return app.start(leaf, workflow_id="leaf").result()

    with app, pytest.raises(perdure.ConfigurationError, match="result_async"):
        app.run(blocking_wait, workflow_id="blocking-wait")
