"""The domain model: the states, outcomes, wait reasons and records that every layer shares.

This module imports nothing from perdure, so that storage, the engine, the worker and
the client can all build on it without an import cycle. States are ``str`` enums: a
member *is* its stored text (``WorkflowState.PENDING == "PENDING"``), so records read
back from either database compare equal to members, and SQL receives them as plain
parameters, never spliced into statement text.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

_R = TypeVar("_R")


class _TextEnum(str, enum.Enum):
    """A ``str`` enum that prints as its value on every Python version (3.12 changed
    ``format()`` of mixed-in enums)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class WorkflowState(_TextEnum):
    """Where a workflow stands. It is *active* while PENDING or RUNNING; the other three
    are outcomes, recorded once."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def active(self) -> bool:
        """Whether a workflow in this state still runs (or waits to)."""
        return self in ACTIVE_STATES

    @property
    def terminal(self) -> bool:
        """Whether this state is an outcome."""
        return self in TERMINAL_STATES

    @classmethod
    def parse(cls, text: str) -> WorkflowState:
        """The state named by ``text`` in any case (``"succeeded"``); ``ValueError`` that
        lists the valid names otherwise."""
        try:
            return cls(text.strip().upper())
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise ValueError(f"unknown workflow status {text!r}: use one of {names}") from None


ACTIVE_STATES = (WorkflowState.PENDING, WorkflowState.RUNNING)
TERMINAL_STATES = (WorkflowState.SUCCEEDED, WorkflowState.FAILED, WorkflowState.CANCELLED)


class StepState(_TextEnum):
    """What a step's record at its position says.

    RETRYING is an attempt that failed with another attempt due; WAITING is a wait
    (``recv``, a child's result, ``first``) still waiting, its deadline in
    ``next_attempt_at``; both are replaced by the final record at the same position.
    CANCELLED is where a cancellation (or a deadline) reached the workflow: replay
    raises it again there.
    """

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    RETRYING = "RETRYING"
    WAITING = "WAITING"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        """Whether replay returns (or raises) this record instead of running anything."""
        return self in (StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELLED)


class BreakerState(_TextEnum):
    """A circuit breaker's state (see ``perdure.CircuitBreaker``)."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True)
class Outcome:
    """How a workflow ended: its terminal state, and its encoded output or error.

    The same value is recorded on the workflow, handed to whoever waits in this
    process, and delivered to a parent as the payload of a message
    (``to_json``/``from_json``), whichever store holds it.
    """

    state: WorkflowState
    output: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if not self.state.terminal:
            raise ValueError(f"an outcome is a terminal state, not {self.state}")

    @classmethod
    def of(cls, record: WorkflowRecord) -> Outcome:
        """The outcome a finished workflow's record holds."""
        return cls(WorkflowState(record.status), record.output, record.error)

    def to_json(self) -> str:
        """The outcome as the JSON array ``[state, output, error]``."""
        return json.dumps([self.state.value, self.output, self.error])

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        """The outcome that ``to_json`` wrote."""
        state, output, error = json.loads(text)
        return cls(WorkflowState(state), output, error)


class WaitKind(_TextEnum):
    """What a suspended workflow waits for; the prefix of its stored ``wait_topic``."""

    #: A message on a topic (``perdure.recv``); stored as the bare topic.
    MESSAGE = ""
    #: A child workflow's outcome.
    CHILD = "perdure.child:"
    #: A step's next attempt after a failed one.
    RETRY = "perdure.retry:"
    #: A probe that must pass before a step's next attempt.
    PROBE = "perdure.probe:"
    #: A circuit breaker that must close.
    BREAKER = "perdure.breaker:"


_PREFIXED = (WaitKind.CHILD, WaitKind.RETRY, WaitKind.PROBE, WaitKind.BREAKER)


@dataclass(frozen=True)
class WaitReason:
    """Why a workflow waits: a kind and what it is about (a topic, a child's ID, a step,
    a probe or a breaker's name). A sleep has no reason (``wait_topic`` NULL)."""

    kind: WaitKind
    subject: str

    @property
    def topic(self) -> str:
        """The text stored as the workflow's ``wait_topic``; a message wait is woken by a
        message on exactly this topic."""
        return self.kind.value + self.subject

    @classmethod
    def parse(cls, topic: str) -> WaitReason:
        """The reason a stored ``wait_topic`` holds."""
        for kind in _PREFIXED:
            if topic.startswith(kind.value):
                return cls(kind, topic[len(kind.value) :])
        return cls(WaitKind.MESSAGE, topic)

    def describe(self, at: str) -> str:
        """What the workflow waits for, for people; ``at`` is when it looks again."""
        if self.kind is WaitKind.RETRY:
            return f"the next attempt of step {self.subject!r} at {at}"
        if self.kind is WaitKind.PROBE:
            return f"probe {self.subject} to pass (next probe at {at})"
        if self.kind is WaitKind.BREAKER:
            return f"circuit breaker {self.subject!r} to close (next look at {at} at the latest)"
        if self.kind is WaitKind.CHILD:
            return f"child workflow {self.subject!r} to finish (until {at} at the latest)"
        topic = f"topic {self.subject!r}" if self.subject else "the default topic"
        return f"a message on {topic} (until {at} at the latest)"


# -- records: what the stores hold ------------------------------------------------------
@dataclass(frozen=True)
class NewWorkflow:
    """What ``create_workflow`` inserts."""

    id: str
    name: str
    inputs: str
    serializer: str
    app_version: str
    created_at: float
    #: The workflow that starts this one as its child.
    parent_id: str | None = None
    #: When it must have finished (``app.start(..., timeout=)``).
    deadline_at: float | None = None
    #: The data subjects whose data it holds (``app.options(subjects=...)``), tagged in
    #: the same transaction that creates it.
    subjects: tuple[str, ...] = ()
    #: The trace context of the code that started it (JSON of W3C ``traceparent`` and
    #: ``tracestate``), continued by every execution; None when nothing was traced.
    trace_context: str | None = None


@dataclass(frozen=True)
class WorkflowRecord:
    """One workflow as stored."""

    id: str
    name: str
    status: str
    inputs: str
    output: str | None
    error: str | None
    serializer: str
    app_version: str
    owner: str | None
    epoch: int
    lease_expires_at: float | None
    note: str | None
    recoveries: int
    created_at: float
    updated_at: float
    finished_at: float | None
    #: Set while the workflow is suspended: no executor claims it before this time.
    wake_at: float | None = None
    #: The message topic a suspended ``recv`` waits on ("" is the default topic); None
    #: for a sleep.
    wait_topic: str | None = None
    #: The workflow that started this one as its child.
    parent_id: str | None = None
    #: When ``app.cancel`` asked it (or an ancestor) to cancel.
    cancel_requested_at: float | None = None
    #: When it must have finished, if started with a timeout.
    deadline_at: float | None = None
    #: How many times it continued as new.
    generation: int = 0
    #: Set while it is held (a replay met another step than the one recorded): the
    #: fingerprint of the code that failed to replay it (see ``Store.hold_workflow``).
    held_code: str | None = None
    #: What differed, while it is held (``Hold.to_json``).
    held_detail: str | None = None
    #: The workflow this one was forked from (``app.fork``, ``app.restart``).
    forked_from: str | None = None
    #: How many of the original's recorded steps the fork took over.
    forked_steps: int | None = None
    #: How many times an operator resumed it (``app.resume``).
    resumes: int = 0
    #: The trace context of the code that started it (see ``NewWorkflow``).
    trace_context: str | None = None
    #: The queue it was started in (``perdure.Queue``), its key and priority.
    queue: str | None = None
    queue_key: str | None = None
    priority: int = 0
    #: When its queue first started it (the queue's rate counts these).
    dequeued_at: float | None = None


@dataclass(frozen=True)
class StepRecord:
    """One recorded step (or recorded value such as ``perdure.now()``) of a workflow.

    ``position`` is the step's deterministic place in the workflow ("0", "1",
    "3.0" for the first step of a task the workflow created at its place 3).
    """

    position: str
    name: str
    status: str
    output: str | None
    error: str | None
    attempts: int
    next_attempt_at: float | None
    updated_at: float
    #: When its first attempt began (None for what is not timed, such as a recorded
    #: value); ``updated_at`` is when its latest record was written.
    started_at: float | None = None


@dataclass(frozen=True)
class Hold:
    """Why a workflow is held: at ``position`` its history records step ``recorded`` but
    the code of ``app_version`` with fingerprint ``code`` called ``actual``, at ``at``;
    an executor with the same code looks again at ``retry_at``."""

    position: str
    recorded: str
    actual: str
    app_version: str
    code: str
    at: float
    retry_at: float

    def to_json(self) -> str:
        """The hold as a JSON object (stored as ``held_detail``)."""
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Hold:
        """The hold that ``to_json`` wrote."""
        return cls(**json.loads(text))

    def describe(self, at: str, retry_at: str) -> str:
        """What differed and what happens next, for people (``at`` and ``retry_at``
        formatted by the caller)."""
        return (
            f"held since {at}: at position {self.position} the history records step "
            f"{self.recorded!r} but the code now calls {self.actual!r} (app version "
            f"{self.app_version!r}, code {self.code[:12]}). It resumes when an executor whose "
            f"code replays it claims it: at once for other code, at {retry_at} for this code"
        )


@dataclass(frozen=True)
class VersionCount:
    """The active workflows of one app version (``Store.active_versions``)."""

    app_version: str
    active: int
    held: int
    oldest_created_at: float


@dataclass(frozen=True)
class ExecutorRecord:
    """A process that runs workflows, as it registered itself."""

    id: str
    host: str
    pid: int
    app_version: str
    started_at: float
    heartbeat_at: float
    lease_expires_at: float
    stopped_at: float | None


@dataclass(frozen=True)
class Lease:
    """Proof of ownership that every fenced write carries.

    A write succeeds only while the workflow's stored owner and epoch are still
    these; an executor that took the workflow over has bumped the epoch.
    """

    owner: str
    epoch: int


class OperatorAction(_TextEnum):
    """What an operator did to a workflow (a row of the append-only actions log)."""

    RESUME = "resume"
    FORK = "fork"
    RESTART = "restart"
    CANCEL = "cancel"
    SEND = "send"
    OPEN_BREAKER = "open_breaker"
    CLOSE_BREAKER = "close_breaker"
    RETRY_HELD = "retry_held"
    #: Compliance (``perdure._compliance``): a data subject's payloads replaced by
    #: ``ERASED``; finished workflows deleted by retention or ``perdure gc``; payloads
    #: encrypted again under the current key.
    ERASE = "erase"
    GC = "gc"
    REKEY = "rekey"
    #: On a schedule or a queue, not on a workflow: logged under ``subject_of`` (the
    #: schedule's or the queue's pseudo workflow ID).
    CREATE_SCHEDULE = "create_schedule"
    PAUSE_SCHEDULE = "pause_schedule"
    RESUME_SCHEDULE = "resume_schedule"
    DELETE_SCHEDULE = "delete_schedule"
    UPDATE_QUEUE = "update_queue"


#: The pseudo workflow IDs under which actions on a schedule or a queue are logged
#: (``perdure.schedule:nightly``): the actions log is keyed by workflow ID, and
#: ``perdure.`` keeps them apart from the IDs workflows get (a schedule's ticks are
#: ``schedule:<name>:<tick>``), as ``perdure.rekey`` does for a rekey.
SCHEDULE_SUBJECT = "perdure.schedule:"
QUEUE_SUBJECT = "perdure.queue:"


def subject_of(prefix: str, name: str) -> str:
    """The pseudo workflow ID of the schedule or queue ``name`` in the actions log
    (``prefix`` is ``SCHEDULE_SUBJECT`` or ``QUEUE_SUBJECT``)."""
    return prefix + name


@dataclass(frozen=True)
class ActionRecord:
    """One operator action as logged: who did what to which workflow, and when."""

    seq: int
    at: float
    actor: str
    action: str
    workflow_id: str
    #: The new workflow of a fork or restart.
    target_id: str | None
    #: JSON: what the action changed (for a resume, the outcome it replaced).
    details: str


@dataclass(frozen=True)
class MessageRecord:
    """One message sent to a workflow; ``consumed_at`` is None while it waits."""

    seq: int
    topic: str
    payload: str
    idempotency_key: str | None
    created_at: float
    consumed_at: float | None


@dataclass(frozen=True)
class EventRecord:
    """One event a workflow set (``perdure.set_event``): its latest value."""

    key: str
    value: str
    updated_at: float


@dataclass(frozen=True)
class StreamEntry:
    """One entry of a workflow's stream (``perdure.write_stream``): its offset (0, 1, 2 ...
    per workflow and key) and stored value; the close marker has ``value`` None."""

    offset: int
    value: str | None
    #: Which write made it: ``"<position>"`` from the workflow, ``"<position>#<attempt>@<epoch>"``
    #: from inside a step (the attempt, and the lease epoch it ran under).
    writer: str
    written_at: float

    @property
    def closes(self) -> bool:
        """Whether this is the close marker (``perdure.close_stream``)."""
        return self.value is None


@dataclass(frozen=True)
class BreakerRecord:
    """A circuit breaker as stored (see ``Store.count_breaker_failure``)."""

    name: str
    state: str
    failures: int
    window_start: float | None
    opened_at: float | None
    retry_at: float | None
    probe_holder: str | None
    probe_expires_at: float | None
    last_error: str | None
    updated_at: float
    #: Workflows parked on it (``list_breakers`` only).
    parked: int = 0


def row_reader(cls: type[_R], columns: str) -> Callable[[Sequence[Any]], _R]:
    """A function that makes a ``cls`` record (a frozen dataclass without slots) of a
    row whose values are ``columns`` (their names, comma-separated) in order: the same
    record as ``cls(*row)``, built in a few C calls. A frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``, one Python-level call per field:
    thirty-odd for a workflow, for every record read or returned on the hot path.

    ``columns`` must name exactly the fields of ``cls``, in their order (checked here,
    once: a column list that drifts from its record fails at import, not by a value
    landing in the wrong field); a row of another length raises ``ValueError``.
    """
    names = tuple(column.strip() for column in columns.split(","))
    expected = tuple(field.name for field in fields(cls))  # type: ignore[arg-type]
    if names != expected or "__slots__" in vars(cls) or "__post_init__" in vars(cls):
        raise TypeError(f"{cls.__name__} cannot be read from the columns {columns!r}")
    new = object.__new__

    def read(row: Sequence[Any]) -> _R:
        record = new(cls)
        # Fills the instance's dict directly (past the frozen __setattr__, as the
        # generated __init__ goes past it), in one call.
        record.__dict__.update(zip(names, row, strict=True))
        return record

    return read


#: What every stored payload (inputs, output, error, a step's result or error, a
#: message, an event's value) of an erased workflow is replaced with: valid JSON, the
#: same on every store, and recognised when read back (``SerializationError`` saying it
#: was erased, instead of a value).
ERASED = '{"perdure.erased":true}'
