"""``perdure.patched`` and ``perdure.deprecate_patch``: changing a workflow's code while
runs of the old code are in flight (on both stores)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

import perdure
from perdure import SystemClock
from perdure._engine.history import History
from perdure._engine.signals import Signals
from perdure.storage import StepRecord, WorkflowRecord
from perdure.testing import history, replay


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def steps(app: perdure.App, ledger: list[str]) -> dict[str, Callable[[], str]]:
    """The steps every version of the code shares, registered on ``app``."""
    made: dict[str, Callable[[], str]] = {}
    for name in ("charge", "check_fraud", "ship"):

        def body(name: str = name) -> str:
            ledger.append(name)
            return name

        made[name] = app.step(name=name)(body)
    return made


def old_code(app: perdure.App, ledger: list[str], is_async: bool) -> None:
    made = steps(app, ledger)
    charge, ship = made["charge"], made["ship"]
    if is_async:

        @app.workflow(name="order")
        async def order_async() -> str:
            charge()
            message = await perdure.recv_async("go", timeout=600)
            return f"old:{message}:{ship()}"

    else:

        @app.workflow(name="order")
        def order() -> str:
            charge()
            message = perdure.recv("go", timeout=600)
            return f"old:{message}:{ship()}"


def patched_code(app: perdure.App, ledger: list[str], is_async: bool) -> None:
    made = steps(app, ledger)
    charge, check, ship = made["charge"], made["check_fraud"], made["ship"]
    if is_async:

        @app.workflow(name="order")
        async def order_async() -> str:
            charge()
            if perdure.patched("check-fraud-first"):
                check()
                message = await perdure.recv_async("go", timeout=600)
                return f"new:{message}:{ship()}"
            message = await perdure.recv_async("go", timeout=600)
            return f"old:{message}:{ship()}"

    else:

        @app.workflow(name="order")
        def order() -> str:
            charge()
            if perdure.patched("check-fraud-first"):
                check()
                message = perdure.recv("go", timeout=600)
                return f"new:{message}:{ship()}"
            message = perdure.recv("go", timeout=600)
            return f"old:{message}:{ship()}"


def deprecated_code(app: perdure.App, ledger: list[str]) -> None:
    made = steps(app, ledger)
    charge, check, ship = made["charge"], made["check_fraud"], made["ship"]

    @app.workflow(name="order")
    def order() -> str:
        charge()
        perdure.deprecate_patch("check-fraud-first")
        check()
        message = perdure.recv("go", timeout=600)
        return f"new:{message}:{ship()}"


def in_position_order(step: perdure.StepStatus) -> tuple[int, ...]:
    return tuple(int(part) for part in step.position.split("."))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_run_started_before_a_patch_and_one_after_both_complete_on_the_patched_code(
    make_app: Callable[..., perdure.App], is_async: bool
) -> None:
    ledger: list[str] = []
    old = make_app(suspend_after=0.1)
    old_code(old, ledger, is_async)
    with old:
        before = old.start("order", workflow_id="before")  # type: ignore[arg-type]
        eventually(lambda: before.status().suspended)

    new = make_app(suspend_after=0.1)
    patched_code(new, ledger, is_async)
    with new:
        after = new.start("order", workflow_id="after")  # type: ignore[arg-type]
        eventually(lambda: after.status().suspended)
        new.send("before", "b", topic="go")
        new.send("after", "a", topic="go")
        assert before.result(timeout=20) == "old:b:ship"
        assert after.result(timeout=20) == "new:a:ship"
    # In position order: what this test is about is which positions hold what. (The
    # listing's order, the order records were written, is test_commit_order.py's: CI
    # once listed the async run's marker before ``charge``, when the group committer
    # could commit a queued write before one queued ahead of it.)
    old_steps = [s.name for s in sorted(before.status().steps, key=in_position_order)]
    new_steps = [s.name for s in sorted(after.status().steps, key=in_position_order)]
    assert old_steps == ["charge", "perdure.recv", "ship"]  # no marker, no new step
    assert new_steps == ["charge", "perdure.patch:check-fraud-first", "check_fraud"] + [
        "perdure.recv",
        "ship",
    ]
    assert sorted(ledger) == sorted(["charge", "ship", "charge", "check_fraud", "ship"])
    assert before.status().held is None and after.status().held is None
    # Replay-stable: each history replays on the patched code, to the same outcome.
    for workflow_id in ("before", "after"):
        result = replay(new, history(new, workflow_id))
        assert result.outcome is not None and result.outcome.state == "SUCCEEDED"
    assert len(ledger) == 5  # a replay runs no step


def test_deprecate_patch_replays_runs_with_the_marker_and_new_runs(
    make_app: Callable[..., perdure.App],
) -> None:
    ledger: list[str] = []
    new = make_app(suspend_after=0.1)
    patched_code(new, ledger, False)
    with new:
        marked = new.start("order", workflow_id="marked")  # type: ignore[arg-type]
        eventually(lambda: marked.status().suspended)

    later = make_app(suspend_after=0.1)
    deprecated_code(later, ledger)
    with later:
        fresh = later.start("order", workflow_id="fresh")  # type: ignore[arg-type]
        eventually(lambda: fresh.status().suspended)
        later.send("marked", "m", topic="go")
        later.send("fresh", "f", topic="go")
        assert marked.result(timeout=20) == "new:m:ship"
        assert fresh.result(timeout=20) == "new:f:ship"
    assert "perdure.patch:check-fraud-first" in [s.name for s in marked.status().steps]
    assert [s.name for s in fresh.status().steps] == [
        "charge",
        "check_fraud",
        "perdure.recv",
        "ship",
    ]
    for workflow_id in ("marked", "fresh"):
        replay(later, history(later, workflow_id))


def test_patched_outside_a_workflow_is_refused() -> None:
    with pytest.raises(perdure.ConfigurationError, match="outside a workflow"):
        perdure.patched("x")
    with pytest.raises(perdure.ConfigurationError, match="outside a workflow"):
        perdure.deprecate_patch("x")


def test_a_patch_takes_no_position_where_the_history_continues_past_it() -> None:
    def at(position: str) -> StepRecord:
        return StepRecord(position, "s", "SUCCEEDED", "1", None, 1, None, 1.0)

    record = WorkflowRecord(
        "w", "wf", "RUNNING", "[]", None, None, "json", "1", None, 1, None, None, 0, 1.0, 1.0, None
    )
    cursor = History("w", [at("0"), at("2"), at("t0.5")], Signals(record, SystemClock(), None))
    assert cursor.continues_past("1")  # 2 is recorded in the same scope
    assert not cursor.continues_past("2")
    assert cursor.continues_past("t0.3") and not cursor.continues_past("t0.5")
    assert not cursor.continues_past("t1.0")  # another task's scope
