"""Messages: ``recv`` inside a workflow, and ``app.send`` from one.

A wait for a message takes it with one fenced transaction that also records it at
the wait's position, so each message is received exactly once. Its deadline is
recorded (WAITING) the first time, so that a replay keeps it. ``recv`` suspends
the workflow at once when it has to wait; a child's result, which usually comes
soon, waits ``suspend_after`` in place first (see ``children.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

from .._error_codec import decode_error
from .._errors import (
    ConfigurationError,
    LeaseLost,
    PerdureError,
    StepFailedError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
)
from .._model import StepRecord, StepState
from .._serialization import decode_value, encode_value
from .._telemetry import carrier
from .._validation import check_idempotency_key, check_optional_key, check_workflow_id
from ..storage import FOREVER
from .drivers import drive_async, drive_on_loop, drive_sync
from .effects import Await, Blocking, Commit, Flush, Op, Pause
from .host import Host
from .state import RunState, current_run
from .timers import seconds_of, sync_run, timeout_seconds

RECV = "perdure.recv"
SEND = "perdure.send"


class Receive:
    """One wait for a message at its position: what ``recv`` and a child's result share.

    ``in_place`` is how long it may wait in place before it suspends the workflow even
    though its deadline is far. ``look``, when given, is asked (off the event loop)
    after each look that found no message: a payload it returns ends the wait as if
    it had come as a message (a child's outcome, read from its record).
    """

    def __init__(
        self,
        run: RunState,
        topic: str,
        timeout: float | timedelta | None,
        name: str = RECV,
        in_place: float = 0.0,
        look: Callable[[], str | None] | None = None,
    ):
        self.run = run
        self.name = name
        self.topic = topic
        self.look = look
        self.timeout = None if timeout is None else seconds_of(timeout)
        self.deadline: float | None = None
        self.in_place_until = run.clock.time() + in_place
        self.done = False
        #: The message's payload as stored, or None when the wait timed out.
        self.payload: str | None = None
        self.position, recorded = run.history.take(name)
        if recorded is None:
            return
        if recorded.status == StepState.WAITING:
            self.deadline = recorded.next_attempt_at
        else:
            self.done = True
            self.payload = recorded.output

    @property
    def first(self) -> bool:
        """Whether nothing is recorded for this wait yet."""
        return not self.done and self.deadline is None

    def _record(self, status: StepState, output: str | None, deadline: float | None) -> StepRecord:
        now = self.run.clock.time()
        return StepRecord(self.position, self.name, status, output, None, 1, deadline, now)

    def consume(self) -> Future[tuple[bool, str | None, str | None]]:
        """One attempt to take a message (fenced, with its record)."""
        run = self.run
        run.check_lease()
        record = self._record(StepState.SUCCEEDED, None, None)
        return run.store.consume_message(
            run.workflow_id, run.lease, self.topic, record, run.clock.time()
        )

    def start_waiting(self) -> StepRecord | None:
        """Fix the deadline the first time; returns the WAITING record that keeps it."""
        if self.deadline is not None:
            return None
        now = self.run.clock.time()
        self.deadline = FOREVER if self.timeout is None else now + self.timeout
        if self.deadline <= now:
            return None
        return self._record(StepState.WAITING, None, self.deadline)

    def pause(self, poll: float) -> float:
        """How long to wait in place before looking again (at most ``poll``); 0 when the
        timeout passed; suspends the workflow for a long wait."""
        assert self.deadline is not None
        now = self.run.clock.time()
        remaining = self.deadline - now
        if remaining <= 0:
            return 0.0
        if remaining > self.run.suspend_after and now >= self.in_place_until:
            self.run.suspend(self.deadline, self.topic)
        return min(remaining, poll, max(self.in_place_until - now, self.run.poll_interval))

    def wait(self, watch: str | None = None, poll: float | None = None) -> Op[str | None]:
        """Wait (in place, or suspended) until a message comes or the timeout passes; the
        payload, or None. The end of workflow ``watch`` in this process makes it look
        again at once."""
        run = self.run
        poll = run.poll_interval if poll is None else poll
        if not self.done:
            yield Flush()
        while not self.done:
            run.deliver(self.position, self.name)
            with watching(run, watch) as wake:
                accepted, payload, sent_from = yield Await(self.consume())
                if not accepted:
                    run.unwind(LeaseLost(run.workflow_id, run.lease.epoch))
                if payload is not None and run.observer is not None:
                    # A child's outcome: one span name for all (its topic names the child).
                    span = self.name if self.name != RECV else f"recv {self.topic}".rstrip()
                    run.observer.received(span, self.topic, self.position, sent_from)
                if payload is None and self.look is not None:
                    payload = yield Blocking(self.look)
                    if payload is not None:
                        yield run.write(self._record(StepState.SUCCEEDED, payload, None))
                if payload is not None:
                    self.done, self.payload = True, payload
                    break
                waiting = self.start_waiting()
                if waiting is not None:
                    yield run.write(waiting)
                pause = self.pause(poll)
                if pause <= 0:
                    yield run.write(self._record(StepState.SUCCEEDED, None, None))
                    self.done = True
                    break
                run.check_lease()
                yield Pause(pause, wake)
        return self.payload


@contextlib.contextmanager
def watching(run: RunState, workflow_id: str | None) -> Iterator[Future[Any] | None]:
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


def _recv_run(function: str) -> RunState:
    run = current_run.get()
    if run is None:
        raise ConfigurationError(
            f"perdure.{function}() was called outside a workflow; send with app.send()"
        )
    return run


def _topic_text(topic: str) -> str:
    return "the default topic" if topic == "" else f"topic {topic!r}"


def _receive(run: RunState, function: str, topic: object, timeout: object) -> Receive:
    """The wait of ``perdure.{function}()``, its arguments checked before anything is
    recorded (a NaN timeout would be recorded as a deadline that never passes)."""
    checked = check_optional_key("message topic", topic)
    seconds = timeout_seconds(f"the timeout of perdure.{function}()", timeout)
    return Receive(run, "" if checked is None else checked, seconds)


def _message(run: RunState, wait: Receive, payload: str | None) -> Any:
    if payload is None:
        return None
    what = (
        f"the message on {_topic_text(wait.topic)} received by workflow "
        f"{run.workflow_id!r} at position {wait.position}"
    )
    return decode_value(run.serializer, payload, Any, what)


def recv(topic: str | None = None, timeout: float | timedelta | None = None) -> Any:
    """The next message sent to this workflow on ``topic`` (``app.send``), or None when
    none came within ``timeout`` seconds (None: wait as long as it takes; 0: look once).
    A topic or timeout that breaks the rules of ``perdure._validation`` (NaN, a
    negative number, a topic over 1,000 bytes) raises ``InvalidValueError`` and records
    nothing.

    Messages are delivered in the order they were sent, each exactly once: taking a
    message and recording it at this position are one transaction. A long wait
    suspends the workflow; a message on the topic wakes it. In an async workflow,
    ``await perdure.recv_async(...)``.
    """
    run = sync_run("recv") or _recv_run("recv")
    wait = _receive(run, "recv", topic, timeout)
    return _message(run, wait, drive_sync(run, wait.wait()))


async def recv_async(topic: str | None = None, timeout: float | timedelta | None = None) -> Any:
    """``recv`` for async workflows."""
    run = _recv_run("recv_async")
    wait = _receive(run, "recv_async", topic, timeout)
    return _message(run, wait, await drive_async(run, wait.wait()))


# -- sending from a workflow --------------------------------------------------------------


class UndeliveredError(PerdureError):
    """A message sent from an async workflow's sync ``app.send`` found no active
    workflow to take it (none has the ID, or it has finished)."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"the message to workflow {workflow_id!r} was not delivered: no active workflow "
            "has this ID (it does not exist or has finished)"
        )
        self.workflow_id = workflow_id


def send(
    host: Host,
    run: RunState,
    workflow_id: str,
    message: Any,
    topic: str | None,
    idempotency_key: str | None,
) -> Op[None]:
    """``app.send`` inside a workflow: recorded like a step, its idempotency key by
    default the sender's ID and position, so it is delivered exactly once also when
    the sender crashes and replays."""
    position, recorded = run.history.take(SEND)
    if recorded is not None:
        if recorded.status == StepState.FAILED:
            raise decode_error(recorded.error or "{}", StepFailedError, run.serializer)
        return
    run.deliver(position, SEND)
    run.check_lease()
    key = idempotency_key or f"perdure.send:{run.workflow_id}:{position}"
    what = (
        f"the message to workflow {workflow_id!r} on {_topic_text(topic or '')} sent by "
        f"workflow {run.workflow_id!r} at position {position}"
    )
    payload = encode_value(host.serializer, message, Any, what)
    now = host.clock.time()
    sent_from = carrier()  # the receiver's span links to the sender's

    def stored(result: bool | None) -> None:
        if result is None:
            raise UndeliveredError(workflow_id)
        if result:
            host.wake()  # the message may have made a workflow claimable now

    yield Flush()
    try:
        yield Commit(
            lambda: host.store.send_message(
                workflow_id, topic or "", payload, key, now, trace_context=sent_from
            ),
            stored,
            barrier=True,
        )
    except UndeliveredError:
        # Waited for (not deferred): say which, as ``app.send`` outside a workflow does.
        target = yield Blocking(host.store.get_workflow, (workflow_id,))
        if target is None:
            raise WorkflowNotFoundError(workflow_id) from None
        raise WorkflowFinishedError(workflow_id, target.status) from None
    record = StepRecord(position, SEND, StepState.SUCCEEDED, "null", None, 1, None, now)
    yield Commit(run.write(record).submit, run.accepted, only_after_success=True)


def _check_send(workflow_id: object, topic: object, idempotency_key: object) -> None:
    # The rules app.send applies outside a workflow, before anything is recorded.
    check_workflow_id(workflow_id)
    check_optional_key("topic", topic)
    check_idempotency_key(idempotency_key)


def send_from_workflow(
    host: Host,
    run: RunState,
    workflow_id: str,
    message: Any,
    topic: str | None = None,
    idempotency_key: str | None = None,
) -> None:
    """``app.send`` called inside a workflow. In an async workflow it does not wait for
    the commit (the loop must not block): the message is sent once the run's earlier
    writes are durable, and an undeliverable message raises ``UndeliveredError`` at the
    workflow's next durable operation."""
    _check_send(workflow_id, topic, idempotency_key)
    drive = drive_on_loop if run.definition.is_async else drive_sync
    drive(run, send(host, run, workflow_id, message, topic, idempotency_key))


async def send_from_workflow_async(
    host: Host,
    run: RunState,
    workflow_id: str,
    message: Any,
    topic: str | None = None,
    idempotency_key: str | None = None,
) -> None:
    """``app.send_async`` called inside a workflow."""
    _check_send(workflow_id, topic, idempotency_key)
    await drive_async(run, send(host, run, workflow_id, message, topic, idempotency_key))
