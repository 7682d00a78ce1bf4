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
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from ._clock import Clock
from ._context import current_run, current_scope
from ._errors import ConfigurationError, LeaseLost, NonDeterminismError, Suspended
from ._registry import StepDef
from ._retry import NO_RETRY
from ._runtime import WorkflowRun
from .storage import FOREVER, STEP_SUCCEEDED, STEP_WAITING, StepRecord

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


def _wait_or_suspend(run: WorkflowRun, wake_at: float, topic: str | None) -> float:
    """How long to wait in place for ``wake_at`` (0: it passed); raises ``Suspended`` when
    that is longer than ``suspend_after``."""
    remaining = wake_at - run.clock.time()
    if remaining > run.suspend_after:
        raise Suspended(run.workflow_id, wake_at, topic)
    return max(remaining, 0.0)


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
    run.pause(_wait_or_suspend(run, wake_at, None))


def sleep_until(when: datetime) -> None:
    """Wait until ``when`` (naive means UTC) in a workflow, durably; see ``sleep``."""
    run = _sync_run("sleep_until")
    if run is None:
        time.sleep(max(_timestamp(when) - time.time(), 0.0))
        return
    wake_at: float = run.call_step(_AT, (_timestamp(when),), {})
    run.pause(_wait_or_suspend(run, wake_at, None))


async def sleep_async(duration: float | timedelta) -> None:
    """``sleep`` for async workflows (outside a workflow, ``asyncio.sleep``)."""
    run = current_run.get()
    seconds = _seconds(duration)
    if run is None:
        await asyncio.sleep(max(seconds, 0.0))
        return
    wake_at: float = await run.call_step_async(_AFTER_ASYNC, (run.clock, seconds), {})
    await run.pause_async(_wait_or_suspend(run, wake_at, None))


async def sleep_until_async(when: datetime) -> None:
    """``sleep_until`` for async workflows."""
    run = current_run.get()
    if run is None:
        await asyncio.sleep(max(_timestamp(when) - time.time(), 0.0))
        return
    wake_at: float = await run.call_step_async(_AT_ASYNC, (_timestamp(when),), {})
    await run.pause_async(_wait_or_suspend(run, wake_at, None))


# -- messages -------------------------------------------------------------------------------


class _Receive:
    """One ``recv`` at its position: what the sync and async drivers share."""

    def __init__(self, run: WorkflowRun, topic: str | None, timeout: float | timedelta | None):
        self.run = run
        scope = current_scope.get()
        assert scope is not None, "a workflow run always has a scope"
        self.position = scope.take_position()
        self.topic = "" if topic is None else topic
        self.timeout = None if timeout is None else _seconds(timeout)
        self.deadline: float | None = None
        self.done = False
        self.value: Any = None
        recorded = run.recorded.get(self.position)
        if recorded is None:
            return
        if recorded.name != _RECV:
            raise NonDeterminismError(run.workflow_id, self.position, recorded.name, _RECV)
        if recorded.status == STEP_WAITING:
            self.deadline = recorded.next_attempt_at
        else:
            self.done = True
            self.value = run.serializer.loads(recorded.output or "null", Any)

    def consume(self) -> Any:
        """The future of one attempt to take a message (fenced, with its record)."""
        self.run.check_lease()
        now = self.run.clock.time()
        record = StepRecord(self.position, _RECV, STEP_SUCCEEDED, None, None, 1, None, now)
        run = self.run
        return run.store.consume_message(run.workflow_id, run.lease, self.topic, record, now)

    def consumed(self, result: tuple[bool, str | None]) -> bool:
        """Whether the attempt got a message (then in ``value``)."""
        accepted, payload = result
        if not accepted:
            raise LeaseLost(self.run.workflow_id, self.run.lease.epoch)
        if payload is None:
            return False
        self.done = True
        self.value = self.run.serializer.loads(payload, Any)
        return True

    def start_waiting(self) -> StepRecord | None:
        """Fix the deadline the first time; returns the WAITING record that keeps it."""
        if self.deadline is not None:
            return None
        now = self.run.clock.time()
        self.deadline = FOREVER if self.timeout is None else now + self.timeout
        if self.deadline <= now:
            return None
        return StepRecord(self.position, _RECV, STEP_WAITING, None, None, 1, self.deadline, now)

    def wait(self) -> float:
        """How long to wait in place before looking again; 0 when the timeout passed;
        raises ``Suspended`` for a long wait."""
        assert self.deadline is not None
        remaining = _wait_or_suspend(self.run, self.deadline, self.topic)
        return min(remaining, self.run.poll_interval) if remaining > 0 else 0.0

    def timed_out(self) -> StepRecord:
        """The record of a recv that got no message in time."""
        self.done = True
        output = self.run.serializer.dumps(None, Any)
        now = self.run.clock.time()
        return StepRecord(self.position, _RECV, STEP_SUCCEEDED, output, None, 1, None, now)


def _recv_run(function: str) -> WorkflowRun:
    run = current_run.get()
    if run is None:
        raise ConfigurationError(
            f"perdure.{function}() was called outside a workflow; send with app.send()"
        )
    return run


def recv(topic: str | None = None, timeout: float | timedelta | None = None) -> Any:
    """The next message sent to this workflow on ``topic`` (``app.send``), or None when
    none came within ``timeout`` seconds (None: wait as long as it takes).

    Messages are delivered in the order they were sent, each exactly once: taking a
    message and recording it at this position are one transaction. A long wait
    suspends the workflow; a message on the topic wakes it. In an async workflow,
    ``await perdure.recv_async(...)``.
    """
    run = _sync_run("recv") or _recv_run("recv")
    receive = _Receive(run, topic, timeout)
    while not receive.done:
        if receive.consumed(run.settle(receive.consume())):
            break
        waiting = receive.start_waiting()
        if waiting is not None:
            run.write(waiting)
        pause = receive.wait()
        if pause <= 0:
            run.write(receive.timed_out())
            break
        run.pause(pause)
    return receive.value


async def recv_async(topic: str | None = None, timeout: float | timedelta | None = None) -> Any:
    """``recv`` for async workflows."""
    run = _recv_run("recv_async")
    receive = _Receive(run, topic, timeout)
    while not receive.done:
        if receive.consumed(await run.settle_async(receive.consume())):
            break
        waiting = receive.start_waiting()
        if waiting is not None:
            await run.write_async(waiting)
        pause = receive.wait()
        if pause <= 0:
            await run.write_async(receive.timed_out())
            break
        await run.pause_async(pause)
    return receive.value


# -- events -------------------------------------------------------------------------------


def set_event(key: str, value: Any) -> None:
    """Publish ``value`` as this workflow's event ``key``; ``app.get_event`` reads it from
    outside. Recorded at its position: a replay does not set it again. The value is
    written in the same transaction as its record, replacing any earlier value."""
    run = current_run.get()
    if run is None:
        raise ConfigurationError("perdure.set_event() was called outside a workflow")
    scope = current_scope.get()
    assert scope is not None, "a workflow run always has a scope"
    position = scope.take_position()
    recorded = run.recorded.get(position)
    if recorded is not None:
        if recorded.name != _SET_EVENT:
            raise NonDeterminismError(run.workflow_id, position, recorded.name, _SET_EVENT)
        return
    output = run.serializer.dumps(value, Any)
    run.check_lease()
    record = StepRecord(
        position, _SET_EVENT, STEP_SUCCEEDED, output, None, 1, None, run.clock.time()
    )
    if not run.settle(run.store.set_event(run.workflow_id, run.lease, record, key)):
        raise LeaseLost(run.workflow_id, run.lease.epoch)
