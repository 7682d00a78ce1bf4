"""Queues in one process, on both stores: priority, delay, deduplication, debounce,
fairness between keys, limits changed while running, and where a queued workflow stands
(``status()``, ``perdure status``, ``perdure list``). The limits across processes are
proven in ``test_queue_fleet.py``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from ledger import wait_for

import perdure
from perdure._cli import cli


class Jobs:
    """An app with one queue and a ``job(tag)`` workflow that notes when it runs and,
    when its tag has a gate, waits for the gate to open."""

    def __init__(self, make_app: Callable[..., perdure.App], **limits: Any) -> None:
        self.queue = perdure.Queue("q", **limits)
        self.app = make_app(queues=[self.queue])
        self.ran: list[str] = []
        self.running: set[str] = set()
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.handles: dict[str, perdure.WorkflowHandle[str]] = {}

        @self.app.workflow(name="job")
        def job(tag: str) -> str:
            with self.lock:
                self.ran.append(tag)
                self.running.add(tag)
            gate = self.gates.get(tag)
            if gate is not None:
                gate.wait(30)
            with self.lock:
                self.running.discard(tag)
            return tag

        self.job = job

    def gate(self, tag: str) -> threading.Event:
        self.gates[tag] = threading.Event()
        return self.gates[tag]

    def start(self, tag: str, **options: Any) -> perdure.WorkflowHandle[str]:
        options.setdefault("queue", "q")
        handle = self.app.options(**options).start(self.job, tag)
        self.handles[tag] = handle
        return handle

    def block(self, tag: str = "blocker", **options: Any) -> threading.Event:
        """Start a gated job and wait until it runs: it holds one slot of the queue."""
        gate = self.gate(tag)
        self.start(tag, **options)
        wait_for(lambda: tag in self.running, 30, f"{tag} to run")
        return gate


def test_priority_runs_lower_numbers_first_then_in_start_order(
    make_app: Callable[..., perdure.App],
) -> None:
    jobs = Jobs(make_app, concurrency=1)
    # Queued before the worker starts: every claim then sees all of them waiting.
    priorities = {"p3": 3, "p1a": 1, "p2a": 2, "p1b": 1, "p0": 0, "p2b": 2, "n": -1}
    handles = [jobs.start(tag, priority=p) for tag, p in priorities.items()]
    with jobs.app:
        assert [handle.result(timeout=30) for handle in handles] == list(priorities)
    assert jobs.ran == ["n", "p0", "p1a", "p1b", "p2a", "p2b", "p3"]


def test_round_robin_between_keys_at_equal_priority(
    make_app: Callable[..., perdure.App],
) -> None:
    jobs = Jobs(make_app, concurrency=1)
    tags = [f"big{n}" for n in range(5)] + ["s0", "s1", "t0"]
    handles = [jobs.start(tag, key=tag.rstrip("0123456789")) for tag in tags]
    with jobs.app:
        for handle in handles:
            handle.result(timeout=30)
    # One of each key before the second of any (the key that started one longest ago
    # next): the flood of "big" does not hold the others back.
    assert jobs.ran == ["big0", "s0", "t0", "big1", "s1", "big2", "big3", "big4"]


def test_delay_holds_the_start_and_says_so(make_app: Callable[..., perdure.App]) -> None:
    jobs = Jobs(make_app)
    with jobs.app:
        began = time.time()
        queued = jobs.start("late", delay=0.8)
        plain = jobs.app.options(delay=timedelta(seconds=0.8)).start(jobs.job, "plain")
        for handle in (queued, plain):
            status = handle.status()
            assert status.status == "PENDING" and status.queued is not None
            assert status.queued.reason == perdure.QueueReason.DELAY
            assert status.queued.delayed_until is not None
            assert status.queued.delayed_until.timestamp() >= began + 0.8
            assert status.waiting_for is None  # not a suspended workflow
        assert queued.status().queued.queue == "q"  # type: ignore[union-attr]
        assert plain.status().queued.queue is None  # type: ignore[union-attr]
        assert queued.result(timeout=30) == "late" and plain.result(timeout=30) == "plain"
        assert time.time() - began >= 0.8


def test_dedup_id_returns_the_active_workflow(make_app: Callable[..., perdure.App]) -> None:
    jobs = Jobs(make_app, concurrency=1)
    with jobs.app:
        gate = jobs.block("first", dedup_id="welcome-42")
        again = jobs.start("second", dedup_id="welcome-42")
        other = jobs.start("other", dedup_id="welcome-43")
        assert again.workflow_id == jobs.handles["first"].workflow_id
        assert again.status().status == "RUNNING" and again.workflow_id != other.workflow_id
        gate.set()
        assert again.result(timeout=30) == "first"  # the active one's handle
        assert other.result(timeout=30) == "other"
        # Once it finished, the ID starts a new workflow.
        later = jobs.start("later", dedup_id="welcome-42")
        assert later.workflow_id != again.workflow_id and later.result(timeout=30) == "later"
        # Without a queue, the same rule among workflows outside queues.
        gate = jobs.gate("solo")
        one = jobs.app.options(dedup_id="x").start(jobs.job, "solo")
        two = jobs.app.options(dedup_id="x").start(jobs.job, "twin")
        assert one.workflow_id == two.workflow_id
        gate.set()
        assert two.result(timeout=30) == "solo"
    assert sorted(jobs.ran) == ["first", "later", "other", "solo"]


def test_debounce_collapses_starts_into_one_run_with_the_latest_arguments(
    make_app: Callable[..., perdure.App],
) -> None:
    jobs = Jobs(make_app)
    with jobs.app:
        handles = []
        # A generous window: the starts must come within it of each other, however
        # loaded the machine.
        for n in range(4):
            handles.append(jobs.start(f"v{n}", key="customer-1", debounce=1.5))
            time.sleep(0.05)
        other = jobs.start("w0", key="customer-2", debounce=1.5)
        assert len({handle.workflow_id for handle in handles}) == 1
        assert handles[0].status().queued is not None  # not started while starts come
        assert handles[0].result(timeout=30) == "v3"
        assert other.result(timeout=30) == "w0"
        # After the run started, a start opens a new window.
        after = jobs.start("v9", key="customer-1", debounce=0.2)
        assert after.workflow_id != handles[0].workflow_id
        assert after.result(timeout=30) == "v9"
    assert sorted(jobs.ran) == ["v3", "v9", "w0"]


def test_limits_change_while_running_and_are_stored(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    jobs = Jobs(make_app, concurrency=1)
    with jobs.app:
        gates = [jobs.gate(f"j{n}") for n in range(4)]
        handles = [jobs.start(f"j{n}") for n in range(4)]
        wait_for(lambda: len(jobs.running) == 1, 30, "one to run")
        time.sleep(0.3)
        assert len(jobs.running) == 1
        # Another process (an operator's app, never launched) changes the limit.
        operator = make_app(queues=[perdure.Queue("q", concurrency=1)])
        assert operator.update_queue("q", concurrency=3).concurrency == 3
        wait_for(lambda: len(jobs.running) == 3, 10, "three to run")
        assert jobs.app.queue("q") == perdure.Queue("q", concurrency=3)
        for gate in gates:
            gate.set()
        for handle in handles:
            handle.result(timeout=30)
    # A restart with the same declaration keeps the stored limits; a new one replaces them.
    again = make_app(queues=[perdure.Queue("q", concurrency=1)])
    with again:
        wait_for(lambda: again.queue("q").concurrency == 3, 5, "the declaration")
    changed = make_app(queues=[perdure.Queue("q", concurrency=2, rate=perdure.Rate(5, per=1))])
    with changed:
        wait_for(lambda: changed.queue("q").concurrency == 2, 10, "the new declaration")
    assert changed.queue("q").rate == perdure.Rate(5, 1.0)
    with pytest.raises(perdure.ConfigurationError, match="no queue named 'nope'"):
        changed.update_queue("nope", concurrency=1)


def test_status_list_and_cli_say_where_a_queued_workflow_stands(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    jobs = Jobs(make_app, concurrency=2, key_concurrency=1)
    with jobs.app:
        gates = [jobs.block("a0", key="a"), jobs.block("b0", key="b")]
        waiting = jobs.start("c0", key="c")
        same_key = jobs.start("a1", key="a")
        status = waiting.status()
        assert status.status == "PENDING" and status.queued is not None
        assert (status.queued.queue, status.queued.key, status.queued.position) == ("q", "c", 1)
        assert status.queued.reason == perdure.QueueReason.CONCURRENCY
        queued = same_key.status().queued
        assert queued is not None and queued.reason == perdure.QueueReason.KEY_LIMIT
        assert queued.position == 2
        runner = CliRunner()
        shown = runner.invoke(cli, ["status", waiting.workflow_id, "--database-url", database_url])
        assert shown.exit_code == 0, shown.output
        assert "queued in 'q' (key 'c'): position 1, waiting for: concurrency" in shown.output
        listed = runner.invoke(cli, ["list", "--database-url", database_url])
        assert listed.exit_code == 0, listed.output
        assert "queued in 'q' (key 'a'): position 2, waiting for: key limit" in listed.output
        listing = jobs.app.list_workflows(status="PENDING")
        assert {item.queued.key for item in listing if item.queued} == {"a", "c"}
        for gate in gates:
            gate.set()
        assert waiting.result(timeout=30) == "c0"
        assert waiting.status().queued is None


def test_a_cancel_ends_a_queued_workflow_without_waiting_for_its_turn(
    make_app: Callable[..., perdure.App],
) -> None:
    jobs = Jobs(make_app, concurrency=1)
    with jobs.app:
        gate = jobs.block()
        waiting = jobs.start("never")
        assert jobs.app.cancel(waiting.workflow_id)
        with pytest.raises(perdure.WorkflowCancelledError):
            waiting.result(timeout=30)
        assert "blocker" in jobs.running  # it did not wait for the slot
        gate.set()
        jobs.handles["blocker"].result(timeout=30)
    assert jobs.ran == ["blocker"]


def test_bad_options_are_refused_before_anything_is_recorded(
    make_app: Callable[..., perdure.App],
) -> None:
    jobs = Jobs(make_app)
    options = jobs.app.options
    with pytest.raises(perdure.ConfigurationError, match="does not declare"):
        options(queue="elsewhere").start(jobs.job, "x")
    with pytest.raises(perdure.ConfigurationError, match="give key= too"):
        options(debounce=1)
    with pytest.raises(perdure.ConfigurationError, match="give queue= too"):
        options(priority=2)
    with pytest.raises(perdure.ConfigurationError, match="workflow_id="):
        options(key="k", debounce=1, workflow_id="w")
    with pytest.raises(perdure.InvalidValueError, match="delay"):
        options(queue="q", delay=-1)
    with pytest.raises(perdure.InvalidValueError, match="concurrency"):
        perdure.Queue("q", concurrency=0)
    with pytest.raises(perdure.InvalidValueError, match="per"):
        perdure.Rate(3, per=0)
    with pytest.raises(perdure.ConfigurationError, match="different limits"):
        jobs.app.add_queue(perdure.Queue("q", concurrency=5))
    assert jobs.app.list_workflows() == []


def test_async_starts_and_children_through_queues(make_app: Callable[..., perdure.App]) -> None:
    jobs = Jobs(make_app, concurrency=1)
    app = jobs.app

    @app.workflow(name="parent")
    def parent() -> str:
        try:
            app.options(queue="q").start(jobs.job, "child")
        except perdure.ConfigurationError as exc:
            return str(exc)
        return "started"

    async def main() -> list[str]:
        handles = [
            await app.options(queue="q", key="k").start_async(jobs.job, f"a{n}") for n in range(3)
        ]
        same = await app.options(queue="q", dedup_id="d").start_async(jobs.job, "d0")
        again = await app.options(queue="q", dedup_id="d").start_async(jobs.job, "d1")
        assert same.workflow_id == again.workflow_id
        return [await handle.result_async(timeout=30) for handle in [*handles, again]]

    with app:
        assert asyncio.run(main()) == ["a0", "a1", "a2", "d0"]
        refused = app.run(parent)
    assert "cannot be started with queue=" in refused
