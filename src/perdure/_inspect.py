"""Seeing workflows: one workflow in full (``WorkflowDetail``) and pages of the listing.

What an operator needs to judge a workflow at a glance: its inputs, output or error
with the traceback, every step with its start and end, attempts and what it waits
for, who owns it and whether that owner is alive (its lease), recoveries and resumes,
parent, children and fork origin, events, messages waiting and the operator actions
taken on it. Every value is plain data (``as_dict`` is JSON-ready), shared by the CLI
and the HTTP API so that both show the same thing.

Listing pages are keyed on ``(created_at, id)``: the cursor is that pair of the last row
of a page, opaque to callers, and each page is one index range in either store.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from ._clock import Clock
from ._display import error_summary, utc
from ._engine.describe import describe_step
from ._errors import InvalidValueError, WorkflowNotFoundError
from ._handle import WorkflowStatus
from ._model import StepState, WaitKind, WorkflowState
from ._validation import check_optional_key, check_workflow_id
from .storage import StepRecord, Store, WorkflowRecord, lease_expiry

#: The most rows one page may hold.
MAX_PAGE = 1000


class InspectHost(Protocol):
    """What inspecting needs of the client (a ``Protocol``: no import of the client)."""

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...


def decode_value(text: str | None) -> Any:
    """A stored value as JSON data when it is JSON (the default serializer), else its
    text as stored."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def decode_error_record(text: str | None) -> dict[str, Any] | None:
    """A stored error as ``{"type", "message", "traceback"}`` (``summary`` is the
    "Type: message" line); a text that is not a recorded error is the message."""
    if text is None:
        return None
    data = decode_value(text)
    if not isinstance(data, dict):
        return {"type": None, "message": text, "traceback": None, "summary": text}
    return {
        "type": data.get("type"),
        "message": data.get("message"),
        "traceback": data.get("traceback"),
        "summary": error_summary(text),
    }


def jsonable(value: Any) -> Any:
    """``value`` (dataclasses' ``asdict``, lists, dicts) with every datetime as ISO 8601
    text: ready for ``json.dumps``."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def summary(status: WorkflowStatus) -> dict[str, Any]:
    """A listed workflow as JSON-ready data (its steps are not loaded for a listing)."""
    data = jsonable(asdict(status))
    del data["steps"]
    return dict(data)


def _iso(value: float | None) -> str | None:
    moment = utc(value)
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True)
class StepDetail:
    """One recorded step, in full."""

    position: str
    name: str
    status: str
    attempts: int
    #: When its first attempt began (None for recorded values, which are not timed).
    started_at: str | None
    #: When it ended (its final record); None while it retries or waits.
    ended_at: str | None
    next_attempt_at: str | None
    output: Any
    error: dict[str, Any] | None
    waiting_for: str | None

    @classmethod
    def of(cls, step: StepRecord) -> StepDetail:
        """Build from a stored step."""
        final = StepState(step.status).final
        return cls(
            step.position,
            step.name,
            step.status,
            step.attempts,
            _iso(step.started_at),
            _iso(step.updated_at) if final else None,
            _iso(step.next_attempt_at),
            decode_value(step.output) if step.status == StepState.SUCCEEDED else None,
            decode_error_record(step.error),
            describe_step(step),
        )


@dataclass(frozen=True)
class WorkflowDetail:
    """Everything known about one workflow (``app.inspect``; ``perdure status``; the HTTP
    API's ``GET /workflows/{id}``). Times are ISO 8601 in UTC."""

    workflow_id: str
    name: str
    status: str
    app_version: str
    created_at: str | None
    updated_at: str | None
    finished_at: str | None
    inputs: Any
    output: Any
    error: dict[str, Any] | None
    #: The executor holding its lease, when it will expire, and whether it has not yet.
    owner: str | None
    lease_expires_at: str | None
    owner_alive: bool
    epoch: int
    recoveries: int
    resumes: int
    generation: int
    note: str | None
    waiting_for: str | None
    wake_at: str | None
    #: The RETRYING or WAITING steps: what is in flight and waits for its next attempt.
    in_flight: list[str]
    parent_id: str | None
    children: list[dict[str, str]]
    forked_from: str | None
    forked_steps: int | None
    cancel_requested_at: str | None
    deadline: str | None
    steps: list[StepDetail]
    events: dict[str, Any]
    messages_waiting: list[dict[str, Any]]
    actions: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """The detail as JSON-ready data."""
        return asdict(self)


def inspect_workflow(host: InspectHost, workflow_id: str) -> WorkflowDetail:
    """Everything known about ``workflow_id`` (a few indexed reads, not one snapshot);
    ``WorkflowNotFoundError`` when no workflow has this ID."""
    store = host.store
    record = store.get_workflow(check_workflow_id(workflow_id))
    if record is None:
        raise WorkflowNotFoundError(workflow_id)
    steps = store.load_steps(record.id)
    status = WorkflowStatus.from_records(record, [])
    now = host.clock.time()
    # The owner's executor lease, which its row stands for (an executor's read only then).
    leases = {e.id: e.lease_expires_at for e in store.list_executors()} if record.owner else {}
    lease = lease_expiry(record, leases)
    alive = lease is not None and lease > now
    succeeded = record.status == WorkflowState.SUCCEEDED
    return WorkflowDetail(
        workflow_id=record.id,
        name=record.name,
        status=record.status,
        app_version=record.app_version,
        created_at=_iso(record.created_at),
        updated_at=_iso(record.updated_at),
        finished_at=_iso(record.finished_at),
        inputs=decode_value(record.inputs),
        output=decode_value(record.output) if succeeded else None,
        error=decode_error_record(record.error),
        owner=record.owner,
        lease_expires_at=_iso(lease),
        owner_alive=alive,
        epoch=record.epoch,
        recoveries=record.recoveries,
        resumes=record.resumes,
        generation=record.generation,
        note=record.note,
        waiting_for=status.waiting_for,
        wake_at=None if status.wake_at is None else status.wake_at.isoformat(),
        in_flight=[s.position for s in steps if not StepState(s.status).final],
        parent_id=record.parent_id,
        children=[
            {"workflow_id": child.id, "name": child.name, "status": child.status}
            for child in store.list_children(record.id, limit=MAX_PAGE)
        ],
        forked_from=record.forked_from,
        forked_steps=record.forked_steps,
        cancel_requested_at=_iso(record.cancel_requested_at),
        deadline=_iso(record.deadline_at),
        steps=[StepDetail.of(step) for step in steps],
        events={e.key: decode_value(e.value) for e in store.list_events(record.id)},
        messages_waiting=[
            {
                "seq": m.seq,
                "topic": m.topic,
                "payload": decode_value(m.payload),
                "sent_at": _iso(m.created_at),
            }
            for m in store.list_messages(record.id, pending_only=True, limit=MAX_PAGE)
            # A child's outcome travels as a message too; its status is in ``children``.
            if not m.topic.startswith(WaitKind.CHILD.value)
        ],
        actions=[
            {
                "seq": a.seq,
                "at": _iso(a.at),
                "actor": a.actor,
                "action": a.action,
                "target_id": a.target_id,
                "details": decode_value(a.details),
            }
            for a in store.list_actions(record.id, limit=MAX_PAGE)
        ],
    )


# -- listing pages ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowPage:
    """One page of a listing: its workflows and the cursor of the next page (None on the
    last one)."""

    workflows: list[WorkflowStatus]
    next_cursor: str | None


def encode_cursor(record: WorkflowRecord) -> str:
    """The cursor of the page after ``record`` (opaque: URL-safe base64 of JSON)."""
    raw = json.dumps([record.created_at, record.id]).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The ``(created_at, id)`` a cursor holds; ``InvalidValueError`` for one that
    ``encode_cursor`` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, workflow_id = json.loads(raw.decode("utf-8", "surrogatepass"))
        if isinstance(created_at, int | float) and isinstance(workflow_id, str):
            return float(created_at), workflow_id
    except (ValueError, TypeError, binascii.Error):
        pass
    raise InvalidValueError(
        f"cursor {cursor[:60]!r} is not one a listing returned: pass the next_cursor of "
        "the previous page as it was, or leave it out for the first page"
    )


def _seconds(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    return value.timestamp()


def check_queue_filter(queue: str | None, key: str | None) -> None:
    """Check the queue filters of a listing: a key is a queue's key, so it comes with
    its queue (``InvalidValueError`` otherwise)."""
    check_optional_key("queue name", queue)
    check_optional_key("queue key", key)
    if key is not None and queue is None:
        raise InvalidValueError(
            f"key {key[:60]!r} was given without a queue: a key belongs to a queue, so "
            "pass the queue too (queue=..., --queue, ?queue=)"
        )


def list_records(
    host: InspectHost,
    *,
    status: str | None = None,
    name: str | None = None,
    created_after: datetime | float | None = None,
    created_before: datetime | float | None = None,
    limit: int = 50,
    cursor: str | None = None,
    newest_first: bool = True,
    queue: str | None = None,
    key: str | None = None,
) -> list[WorkflowRecord]:
    """The records of a page (see ``list_page``) and the one after it, if any: at most
    ``limit + 1``, in the listing's order."""
    state = None
    if status is not None:
        try:
            state = WorkflowState.parse(status)
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
    check_optional_key("workflow name", name)
    check_queue_filter(queue, key)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidValueError(f"limit must be a whole number from 1 to {MAX_PAGE}, not {limit!r}")
    return host.store.list_workflows(
        status=state,
        name=name,
        created_after=_seconds(created_after),
        created_before=_seconds(created_before),
        limit=limit + 1,
        newest_first=newest_first,
        after=None if cursor is None else decode_cursor(cursor),
        queue=queue,
        key=key,
    )


def page_of(records: list[WorkflowRecord], limit: int) -> WorkflowPage:
    """The page of the first ``limit`` of ``records`` (in the listing's order), with a
    cursor when there are more."""
    more = len(records) > limit
    records = records[:limit]
    return WorkflowPage(
        [WorkflowStatus.from_records(record, []) for record in records],
        encode_cursor(records[-1]) if more else None,
    )


def list_page(
    host: InspectHost,
    *,
    status: str | None = None,
    name: str | None = None,
    created_after: datetime | float | None = None,
    created_before: datetime | float | None = None,
    limit: int = 50,
    cursor: str | None = None,
    newest_first: bool = True,
    queue: str | None = None,
    key: str | None = None,
) -> WorkflowPage:
    """One page of workflows matching every filter (``status`` in any case), newest first
    by default; ``cursor`` is the previous page's ``next_cursor``; ``queue`` and ``key``
    (with ``queue``) keep a queue's workflows, of one key."""
    records = list_records(
        host,
        status=status,
        name=name,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
        newest_first=newest_first,
        queue=queue,
        key=key,
    )
    return page_of(records, limit)
