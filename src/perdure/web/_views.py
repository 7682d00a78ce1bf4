"""What the dashboard's templates show, computed from ``WorkflowDetail``: times for people,
values as formatted JSON, the steps' timeline (a bar per step on the workflow's time
axis) and the choices of a fork. Plain functions of plain data, so that the templates
hold no logic but loops and conditions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .._display import utc
from .._handle import HoldStatus
from .._inspect import StepDetail, WorkflowDetail
from .._model import StepState, WorkflowState
from ..storage import WorkflowRecord

#: The workflow statuses a listing can filter on, in the order of their life.
STATUSES = [state.value for state in WorkflowState]
#: The narrowest bar drawn, in percent of the axis: an instant step stays visible.
MIN_BAR = 0.6


def parse_time(value: str | datetime | None) -> datetime | None:
    """An ISO 8601 time (a ``datetime-local`` input has no zone: it is UTC) or None."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def when(value: str | datetime | None) -> str:
    """A time for people: ``2026-01-05 10:00:00`` in UTC (empty for None)."""
    moment = parse_time(value)
    if moment is None:
        return ""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``0.25 s``, ``12.0 s``, ``3 min 20 s``, ``2 h 05 min`` (empty for None)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def pretty(value: Any) -> str:
    """A decoded value as indented JSON (the template escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True)
class Bar:
    """One step of the timeline: its row and its bar (offsets in percent of the axis)."""

    number: int
    step: StepDetail
    start: str
    end: str
    took: str
    #: Where the bar starts and how wide it is, in percent (a tick at its end for a step
    #: with no start, such as a recorded ``perdure.now()``); None when neither is known.
    left: float | None
    width: float | None
    #: Whether it has no end yet (in flight: retrying or waiting).
    open: bool


@dataclass(frozen=True)
class ChildBar:
    """A child workflow on its parent's timeline: from its creation to its end."""

    workflow_id: str
    name: str
    status: str
    start: str
    end: str
    took: str
    left: float
    width: float
    open: bool


@dataclass(frozen=True)
class Timeline:
    """The steps and children on one time axis, from the workflow's creation to its end
    (or now)."""

    bars: list[Bar]
    children: list[ChildBar]
    start: str
    end: str
    span: str


def timeline(
    detail: WorkflowDetail, now: datetime, children: Sequence[WorkflowRecord] = ()
) -> Timeline:
    """Every step of ``detail`` as a bar between its start and its end (now, while in
    flight), and every child from its creation to its end, on the axis from the
    workflow's creation to its end."""
    starts = [parse_time(step.started_at) for step in detail.steps]
    ends = [parse_time(step.ended_at) for step in detail.steps]
    born = [utc(child.created_at) or now for child in children]
    died = [utc(child.finished_at) for child in children]
    origin = min(
        [parse_time(detail.created_at) or now, *(s for s in starts if s is not None), *born]
    )
    finish = max(
        [
            parse_time(detail.finished_at) or now,
            *(e for e in [*ends, *died] if e is not None),
        ]
    )
    span = max((finish - origin).total_seconds(), 1e-3)

    def place(started: datetime, stop: datetime) -> tuple[float, float]:
        left = min(100.0 - MIN_BAR, 100.0 * (started - origin).total_seconds() / span)
        width = max(MIN_BAR, 100.0 * (stop - started).total_seconds() / span)
        return left, min(width, 100.0 - left)

    bars = []
    for number, (step, started, ended) in enumerate(zip(detail.steps, starts, ends, strict=True)):
        stop = ended or now
        left: float | None
        width: float | None
        if started is not None:
            left, width = place(started, stop)
        elif ended is not None:  # a recorded value or a wait: a tick when it was recorded
            left, width = place(ended, ended)
        else:
            left = width = None
        took = None if started is None else (stop - started).total_seconds()
        bars.append(
            Bar(
                number,
                step,
                when(started),
                when(ended),
                duration(took),
                left,
                width,
                ended is None and started is not None,
            )
        )
    child_bars = [
        ChildBar(
            child.id,
            child.name,
            child.status,
            when(start),
            when(end),
            duration(((end or now) - start).total_seconds()),
            *place(start, end or now),
            end is None,
        )
        for child, start, end in zip(children, born, died, strict=True)
    ]
    return Timeline(bars, child_bars, when(origin), when(finish), duration(span))


def fork_choices(detail: WorkflowDetail) -> list[tuple[int, str]]:
    """``(from_step, label)`` of each fork: keep the first N recorded steps, run from the
    next one (the same numbering as ``perdure fork --from-step``)."""
    choices = [(0, "0: run every step anew (as a restart)")]
    for number, step in enumerate(detail.steps, start=1):
        following = detail.steps[number] if number < len(detail.steps) else None
        rest = (
            f"run from [{following.position}] {following.name}"
            if following is not None
            else "run on after the last recorded step"
        )
        choices.append((number, f"{number}: keep up to [{step.position}] {step.name}, {rest}"))
    return choices


def default_fork(detail: WorkflowDetail) -> int:
    """The fork offered first: keep the steps before the first that did not succeed (a
    failed step copied would fail the fork again), or every step."""
    for number, step in enumerate(detail.steps):
        if step.status != StepState.SUCCEEDED:
            return number
    return len(detail.steps)


def hold_lines(hold: HoldStatus | None) -> list[tuple[str, str]]:
    """What differed for a HELD workflow, as labelled lines (empty when not held)."""
    if hold is None:
        return []
    return [
        ("at position", hold.position),
        ("the history records", hold.recorded),
        ("the code called", hold.actual),
        ("code", f"version {hold.app_version}, fingerprint {hold.code}"),
        ("held at", when(hold.held_at)),
        ("tried again at", when(hold.retry_at)),
    ]


def status_class(status: str) -> str:
    """The CSS class of a status badge."""
    return "st-" + status.lower().replace("_", "-")
