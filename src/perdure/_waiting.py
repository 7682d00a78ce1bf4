"""Waiting and talking inside a workflow: durable timers, messages and events.

A wait's deadline is recorded at its position, like ``perdure.now()``, so that a
replay keeps the first run's deadline. A wait of at most ``suspend_after`` seconds
waits in place. A longer one *suspends* the workflow: the execution unwinds with
the internal ``Suspended`` signal and the executor records the workflow suspended
until its deadline, holding no thread, task or memory for it. When the deadline
comes (or a message arrives on the topic a ``recv`` waits on), any executor claims
the workflow and replays it to where it waited.

Synchronous workflows call ``sleep``, ``sleep_until`` and ``recv``; async ones await
``sleep_async``, ``sleep_until_async`` and ``recv_async``. ``set_event`` is quick and
serves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime, timedelta, timezone
from typing import Any

from ._clock import Clock
from ._context import current_run, current_scope
from ._errors import ConfigurationError, LeaseLost, NonDeterminismError, Suspended
from ._registry import StepDef
from ._retry import NO_RETRY
from ._runtime import WorkflowRun
from .storage import FOREVER, STEP_CANCELLED, STEP_SUCCEEDED, STEP_WAITING, StepRecord

_SLEEP = "perdure.sleep"
_RECV = "perdure.recv"
_SET_EVENT = "perdure.set_event"


def _seconds(duration: float | timedelta) -> float:
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


def _timestamp(when: datetime) -> float:
    # A naive datetime is taken as UTC, like perdure.now() returns.
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _wake_after(clock: Clock, seconds: float) -> float:
    return clock.time() + seconds


def _wake_at(timestamp: float) -> float:
    return timestamp


async def _wake_after_async(clock: Clock, seconds: float) -> float:
    return clock.time() + seconds


async def _wake_at_async(timestamp: float) -> float:
    return timestamp


_AFTER = StepDef(_SLEEP, _wake_after, False, NO_RETRY)
_AT = StepDef(_SLEEP, _wake_at, False, NO_RETRY)
_AFTER_ASYNC = StepDef(_SLEEP, _wake_after_async, True, NO_RETRY)
_AT_ASYNC = StepDef(_SLEEP, _wake_at_async, True, NO_RETRY)


def _sync_run(function: str) -> WorkflowRun | None:
    run = current_run.get()
    if run is not None and run.definition.is_async:
        raise ConfigurationError(
            f"perdure.{function}() blocks: in an async workflow, await perdure.{function}_async()"
        )
    return run


def _after_wait(run: WorkflowRun) -> str | None:
    """Where a timer's wait ends: raise a cancellation recorded right after it (the first
    run was interrupted here); else the free position at which to deliver one that is due
    now, if any."""
    scope = current_scope.get()
    assert scope is not None, "a workflow run always has a scope"
    recorded = run.recorded.get(scope.peek())
    if recorded is not None and recorded.status == STEP_CANCELLED:
        run.take_position()
        raise run.replayed_signal(recorded)
    if recorded is None and run.due_signal() is not None:
        return run.take_position()
    return None


def _remaining(run: WorkflowRun, wake_at: float) -> float:
    """Seconds to wait in place for ``wake_at``; suspends the workflow if that is far."""
    remaining = wake_at - run.clock.time()
    if remaining > run.suspend_after:
        run.unwind(Suspended(run.workflow_id, wake_at, None))
    if remaining > 0:
        run.check_lease()
    return remaining


def _wait_until(run: WorkflowRun, wake_at: float) -> None:
    """Wait in place for ``wake_at``, or suspend the workflow if that is far."""
    while True:
        position = _after_wait(run)
        if position is not None:
            run.deliver(position, _SLEEP)
        remaining = _remaining(run, wake_at)
        if remaining <= 0:
            return
        run.wait_sync(remaining)


async def _wait_until_async(run: WorkflowRun, wake_at: float) -> None:
    """``_wait_until`` for async workflows."""
    while True:
        position = _after_wait(run)
        if position is not None:
            await run.deliver_async(position, _SLEEP)
        remaining = _remaining(run, wake_at)
        if remaining <= 0:
            return
        await run.wait_async(remaining)


# -- timers -------------------------------------------------------------------------------


def sleep(duration: float | timedelta) -> None:
    """Wait ``duration`` (seconds or a ``timedelta``) in a workflow, durably.

    The wake time is recorded at this position, so a replay keeps it; a long wait
    suspends the workflow (it holds nothing meanwhile) and it resumes on any executor
    once the time comes. Outside a workflow, ``time.sleep``. In an async workflow,
    ``await perdure.sleep_async(...)``.
    """
    run = _sync_run("sleep")
    seconds = _seconds(duration)
    if run is None:
        time.sleep(max(seconds, 0.0))
        return
    wake_at: float = run.call_step(_AFTER, (run.clock, seconds), {})
    _wait_until(run, wake_at)


def sleep_until(when: datetime) -> None:
    """Wait until ``when`` (naive means UTC) in a workflow, durably; see ``sleep``."""
    run = _sync_run("sleep_until")
    if run is None:
        time.sleep(max(_timestamp(when) - time.time(), 0.0))
        return
    wake_at: float = run.call_step(_AT, (_timestamp(when),), {})
    _wait_until(run, wake_at)


async def sleep_async(duration: float | timedelta) -> None:
    """``sleep`` for async workflows (outside a workflow, ``asyncio.sleep``)."""
    run = current_run.get()
    seconds = _seconds(duration)
    if run is None:
        await asyncio.sleep(max(seconds, 0.0))
        return
    wake_at: float = await run.call_step_async(_AFTER_ASYNC, (run.clock, seconds), {})
    await _wait_until_async(run, wake_at)


async def sleep_until_async(when: datetime) -> None:
    """``sleep_until`` for async workflows."""
    run = current_run.get()
    if run is None:
        await asyncio.sleep(max(_timestamp(when) - time.time(), 0.0))
        return
    wake_at: float = await run.call_step_async(_AT_ASYNC, (_timestamp(when),), {})
    await _wait_until_async(run, wake_at)


# -- messages -------------------------------------------------------------------------------


class Receive:
    """One wait for a message at its position: what ``recv`` and a child's result share,
    sync and async.

    ``in_place`` is how long it may wait in place before it suspends the workflow even
    though its deadline is far (``recv`` suspends at once; a child's result, which
    usually comes soon, waits ``suspend_after`` first).
    """

    def __init__(
        self,
        run: WorkflowRun,
        topic: str,
        timeout: float | timedelta | None,
        name: str = _RECV,
        in_place: float = 0.0,
    ):
        self.run = run
        self.name = name
        self.position = run.take_position()
        self.topic = topic
        self.timeout = None if timeout is None else _seconds(timeout)
        self.deadline: float | None = None
        self.in_place_until = run.clock.time() + in_place
        self.done = False
        #: The message's payload as stored, or None when the wait timed out.
        self.payload: str | None = None
        recorded = run.recorded.get(self.position)
        if recorded is None:
            return
        if recorded.status == STEP_CANCELLED:
            raise run.replayed_signal(recorded)
        if recorded.name != name:
            raise NonDeterminismError(run.workflow_id, self.position, recorded.name, name)
        if recorded.status == STEP_WAITING:
            self.deadline = recorded.next_attempt_at
        else:
            self.done = True
            self.payload = recorded.output

    def consume(self) -> Any:
        """The future of one attempt to take a message (fenced, with its record)."""
        self.run.check_lease()
        now = self.run.clock.time()
        record = StepRecord(self.position, self.name, STEP_SUCCEEDED, None, None, 1, None, now)
        run = self.run
        return run.store.consume_message(run.workflow_id, run.lease, self.topic, record, now)

    def consumed(self, result: tuple[bool, str | None]) -> bool:
        """Whether the attempt got a message (then in ``payload``)."""
        accepted, payload = result
        if not accepted:
            self.run.unwind(LeaseLost(self.run.workflow_id, self.run.lease.epoch))
        if payload is None:
            return False
        self.done = True
        self.payload = payload
        return True

    def start_waiting(self) -> StepRecord | None:
        """Fix the deadline the first time; returns the WAITING record that keeps it."""
        if self.deadline is not None:
            return None
        now = self.run.clock.time()
        self.deadline = FOREVER if self.timeout is None else now + self.timeout
        if self.deadline <= now:
            return None
        return StepRecord(self.position, self.name, STEP_WAITING, None, None, 1, self.deadline, now)

    def wait(self, poll: float) -> float:
        """How long to wait in place before looking again (at most ``poll``); 0 when the
        timeout passed; raises ``Suspended`` for a long wait."""
        assert self.deadline is not None
        now = self.run.clock.time()
        remaining = self.deadline - now
        if remaining <= 0:
            return 0.0
        if remaining > self.run.suspend_after and now >= self.in_place_until:
            self.run.unwind(Suspended(self.run.workflow_id, self.deadline, self.topic))
        return min(remaining, poll, max(self.in_place_until - now, self.run.poll_interval))

    def timed_out(self) -> StepRecord:
        """The record of a wait that got no message in time."""
        self.done = True
        now = self.run.clock.time()
        return StepRecord(self.position, self.name, STEP_SUCCEEDED, None, None, 1, None, now)

    def run_sync(self, watch: str | None = None, poll: float | None = None) -> None:
        """Wait (in this thread, or suspended) until a message comes or the timeout passes;
        the end of workflow ``watch`` in this process makes it look again at once."""
        run = self.run
        poll = run.poll_interval if poll is None else poll
        while not self.done:
            run.deliver(self.position, self.name)
            with _watching(run, watch) as wake:
                if self.consumed(run.settle(self.consume())):
                    return
                waiting = self.start_waiting()
                if waiting is not None:
                    run.write(waiting)
                pause = self.wait(poll)
                if pause <= 0:
                    run.write(self.timed_out())
                    return
                run.check_lease()
                run.wait_sync(pause, wake)

    async def run_async(self, watch: str | None = None, poll: float | None = None) -> None:
        """``run_sync`` for async workflows."""
        run = self.run
        poll = run.poll_interval if poll is None else poll
        while not self.done:
            await run.deliver_async(self.position, self.name)
            with _watching(run, watch) as wake:
                if self.consumed(await run.settle_async(self.consume())):
                    return
                waiting = self.start_waiting()
                if waiting is not None:
                    await run.write_async(waiting)
                pause = self.wait(poll)
                if pause <= 0:
                    await run.write_async(self.timed_out())
                    return
                run.check_lease()
                await run.wait_async(pause, wake)


@contextlib.contextmanager
def _watching(run: WorkflowRun, workflow_id: str | None) -> Iterator[Future[Any] | None]:
    """A future resolved when workflow ``workflow_id`` ends in this process, subscribed
    before looking at the store so that an end in between is not missed."""
    if workflow_id is None:
        yield None
        return
    waiter = run.notifier.subscribe(workflow_id)
    try:
        yield waiter
    finally:
        run.notifier.unsubscribe(workflow_id, waiter)


def _recv_run(function: str) -> WorkflowRun:
    run = current_run.get()
    if run is None:
        raise ConfigurationError(
            f"perdure.{function}() was called outside a workflow; send with app.send()"
        )
    return run


def _message(run: WorkflowRun, receive: Receive) -> Any:
    return None if receive.payload is None else run.serializer.loads(receive.payload, Any)


def recv(topic: str | None = None, timeout: float | timedelta | None = None) -> Any:
    """The next message sent to this workflow on ``topic`` (``app.send``), or None when
    none came within ``timeout`` seconds (None: wait as long as it takes).

    Messages are delivered in the order they were sent, each exactly once: taking a
    message and recording it at this position are one transaction. A long wait
    suspends the workflow; a message on the topic wakes it. In an async workflow,
    ``await perdure.recv_async(...)``.
    """
    run = _sync_run("recv") or _recv_run("recv")
    receive = Receive(run, "" if topic is None else topic, timeout)
    receive.run_sync()
    return _message(run, receive)


async def recv_async(topic: str | None = None, timeout: float | timedelta | None = None) -> Any:
    """``recv`` for async workflows."""
    run = _recv_run("recv_async")
    receive = Receive(run, "" if topic is None else topic, timeout)
    await receive.run_async()
    return _message(run, receive)


# -- events -------------------------------------------------------------------------------


def _event_record(run: WorkflowRun, key: str, value: Any) -> StepRecord | None:
    """The record of a new ``set_event`` at its position, or None on replay."""
    position = run.take_position()
    recorded = run.recorded.get(position)
    if recorded is not None:
        if recorded.status == STEP_CANCELLED:
            raise run.replayed_signal(recorded)
        if recorded.name != _SET_EVENT:
            raise NonDeterminismError(run.workflow_id, position, recorded.name, _SET_EVENT)
        return None
    output = run.serializer.dumps(value, Any)
    run.check_lease()
    return StepRecord(position, _SET_EVENT, STEP_SUCCEEDED, output, None, 1, None, run.clock.time())


def _event_run(function: str) -> WorkflowRun:
    run = current_run.get()
    if run is None:
        raise ConfigurationError(f"perdure.{function}() was called outside a workflow")
    return run


def set_event(key: str, value: Any) -> None:
    """Publish ``value`` as this workflow's event ``key``; ``app.get_event`` reads it from
    outside. Recorded at its position: a replay does not set it again. The value is
    written in the same transaction as its record, replacing any earlier value. In an
    async workflow, ``await perdure.set_event_async(...)`` does not block the event loop
    while the value is written."""
    run = _event_run("set_event")
    record = _event_record(run, key, value)
    if record is not None and not run.settle(
        run.store.set_event(run.workflow_id, run.lease, record, key)
    ):
        run.unwind(LeaseLost(run.workflow_id, run.lease.epoch))


async def set_event_async(key: str, value: Any) -> None:
    """``set_event`` for async workflows."""
    run = _event_run("set_event_async")
    record = _event_record(run, key, value)
    if record is not None and not await run.settle_async(
        run.store.set_event(run.workflow_id, run.lease, record, key)
    ):
        run.unwind(LeaseLost(run.workflow_id, run.lease.epoch))
