"""What ``App`` offers for schedules: ``@app.schedule``, ``app.schedules()``,
``create_schedule``, ``pause_schedule``, ``resume_schedule``, ``delete_schedule``.

One function per method, each taking the app first; ``App`` binds them as its methods
(as ``_operating`` does). What a schedule is and how its ticks are computed:
``perdure._schedules``; who fires them: ``perdure._worker._scheduler``.

Creating, pausing, resuming and deleting a schedule at run time are operator actions:
logged with who (``actor``, default the OS user) and when, in the transaction of the
change, under the schedule's pseudo workflow ID ``perdure.schedule:<name>``
(``app.audit_log(schedule=name)``). The declarations an executor writes from code are
not logged (no operator made them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ._clock import Clock
from ._errors import InvalidValueError
from ._registry import WORKFLOW_ATTR, Registry
from ._repair import actor_or_default
from ._schedules import (
    DEFAULT_GRACE,
    ScheduleRecord,
    ScheduleSource,
    ScheduleSpec,
    check_tick_function,
    describe_tick,
    make_spec,
    next_tick,
)
from .storage import Store

F = TypeVar("F", bound=Callable[..., Any])


class SchedulingHost(Protocol):
    """What these functions need of the app."""

    @property
    def registry(self) -> Registry: ...

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    def workflow(
        self, *, name: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


@dataclass(frozen=True)
class ScheduleStatus:
    """A schedule: its definition, and where its ticks stand."""

    name: str
    #: The registered name of the workflow each tick starts.
    workflow: str
    cron: str
    tz: str
    #: ``"skip"``, ``"latest"`` or ``"all"``: what runs of the ticks an outage missed.
    catch_up: str
    #: Seconds a tick may be late and still run whatever ``catch_up`` says.
    grace: float
    #: ``"code"`` (``@app.schedule``) or ``"api"`` (``app.create_schedule``).
    source: str
    paused: bool
    #: The next tick (in the schedule's zone); None while paused.
    next_tick: datetime | None
    #: Ticks up to this time are handled (run or skipped); when the schedule was created or
    #: resumed if no tick came since. None for a schedule declared in code that no
    #: executor has launched with yet.
    last_tick: datetime | None
    #: The workflow ID of the newest tick that ran, if any.
    last_run_id: str | None


def _status(record: ScheduleRecord, now: float) -> ScheduleStatus:
    spec = record.spec
    upcoming: datetime | None = None
    if not record.paused:
        if record.next_tick is not None:
            upcoming = describe_tick(record.next_tick, spec.tz)
        else:
            upcoming = next_tick(spec, max(record.last_tick, now))
    return ScheduleStatus(
        name=spec.name,
        workflow=spec.workflow,
        cron=spec.cron,
        tz=spec.tz,
        catch_up=str(spec.catch_up),
        grace=spec.grace,
        source=record.source,
        paused=record.paused,
        next_tick=upcoming,
        last_tick=describe_tick(record.last_tick, spec.tz),
        last_run_id=record.last_workflow_id,
    )


def _undeclared(spec: ScheduleSpec, now: float) -> ScheduleStatus:
    # Declared in this code, not yet written by an executor: its first tick is the first
    # after that executor launches; the next one from now is the best guess.
    return ScheduleStatus(
        name=spec.name,
        workflow=spec.workflow,
        cron=spec.cron,
        tz=spec.tz,
        catch_up=str(spec.catch_up),
        grace=spec.grace,
        source=ScheduleSource.CODE.value,
        paused=False,
        next_tick=next_tick(spec, now),
        last_tick=None,
        last_run_id=None,
    )


def schedule(
    app: SchedulingHost,
    cron: str,
    *,
    tz: str = "UTC",
    catch_up: str = "skip",
    grace: float = DEFAULT_GRACE,
    name: str | None = None,
) -> Callable[[F], F]:
    """Run a workflow once per tick of ``cron`` in the time zone ``tz``:
    ``@app.schedule("*/5 * * * *", tz="Europe/Paris")`` above ``def report(tick:
    datetime)``.

    The decorated function becomes a workflow (registered as ``@app.workflow`` would,
    under ``name`` if given); above ``@app.workflow`` it schedules that workflow (keep it
    on top: below, the function would be registered twice). Several ``@app.schedule``
    may schedule one workflow, each with its own ``name``. It
    takes the tick's time, a timezone-aware ``datetime``, as its one argument. ``cron``
    has five fields (minute hour day-of-month month day-of-week) or six, the first then
    being seconds (``"* * * * * *"``: every second). Every launched executor fires the
    schedules its code declares; each tick runs exactly once across all of them, as the
    workflow ``schedule:<name>:<tick in ISO 8601>``. A tick no executor fired within
    ``grace`` seconds (at least 1) is missed: ``catch_up="skip"`` (default) runs none of those,
    ``"latest"`` the newest, ``"all"`` each of them (at most the newest 100). The
    schedule is named ``name`` (default: the workflow's name).
    """

    def decorate(fn: F) -> F:
        registered = getattr(fn, WORKFLOW_ATTR, None)
        if registered is None:
            wrapper: Callable[..., Any] = app.workflow(name=name)(fn)
            registered = getattr(wrapper, WORKFLOW_ATTR)
        else:
            wrapper = fn
        definition = app.registry.workflow(registered)
        spec = make_spec(name or definition.name, definition.name, cron, tz, catch_up, grace)
        check_tick_function(spec.name, definition.fn)
        app.registry.add_schedule(spec)
        return wrapper  # type: ignore[return-value]  # the workflow's wrapper keeps fn's type

    return decorate


def schedules(app: SchedulingHost) -> list[ScheduleStatus]:
    """Every schedule, by name: those in the store (declared in code by an executor that
    launched, or created at run time) and those this app's code declares."""
    now = app.clock.time()
    found = {record.name: _status(record, now) for record in app.store.list_schedules()}
    for spec in app.registry.schedules.values():
        if spec.name not in found:
            found[spec.name] = _undeclared(spec, now)
    return [found[key] for key in sorted(found)]


def create_schedule(
    app: SchedulingHost,
    name: str,
    workflow: Callable[..., Any] | str,
    cron: str,
    *,
    tz: str = "UTC",
    catch_up: str = "skip",
    grace: float = DEFAULT_GRACE,
    actor: str | None = None,
) -> ScheduleStatus:
    """Create (or redefine) a schedule at run time, stored in the database: every
    executor that registers ``workflow`` fires it (see ``schedule`` for the arguments).
    Its first tick is the first after now; redefining it keeps where its ticks stand.
    Logged (who, when, the definition)."""
    if isinstance(workflow, str):
        workflow_name = workflow
        known = app.registry.workflows.get(workflow)
        fn = None if known is None else known.fn
    else:
        definition = app.registry.workflow(workflow)
        workflow_name, fn = definition.name, definition.fn
    spec = make_spec(name, workflow_name, cron, tz, catch_up, grace)
    if fn is not None:
        check_tick_function(spec.name, fn)
    who, now = actor_or_default(actor), app.clock.time()
    return _status(app.store.put_schedule(spec, ScheduleSource.API.value, now, who), now)


def _known(found: bool | None, name: str) -> bool:
    if found is None:
        raise InvalidValueError(
            f"no schedule is named {name!r}: `perdure schedules` (or app.schedules()) lists "
            "them (one declared in code is stored once an executor launched with it)"
        )
    return found


def pause_schedule(app: SchedulingHost, name: str, *, actor: str | None = None) -> bool:
    """Pause a schedule: no tick fires until it is resumed. Returns False when it was
    paused already; ``InvalidValueError`` when no schedule has this name. A pause is
    logged (who, when)."""
    who = actor_or_default(actor)
    return _known(app.store.pause_schedule(name, True, app.clock.time(), who), name)


def resume_schedule(app: SchedulingHost, name: str, *, actor: str | None = None) -> bool:
    """Resume a paused schedule: its next tick is the first after now (ticks that came
    while it was paused never run, whatever ``catch_up``). Returns False when it was not
    paused; ``InvalidValueError`` when no schedule has this name. Logged (who, when)."""
    who = actor_or_default(actor)
    return _known(app.store.pause_schedule(name, False, app.clock.time(), who), name)


def delete_schedule(app: SchedulingHost, name: str, *, actor: str | None = None) -> bool:
    """Delete a schedule from the store (the workflows it started stay); returns whether
    it existed. A schedule still declared in code is written again when an executor
    with that code launches. A deletion is logged (who, when)."""
    return app.store.delete_schedule(name, app.clock.time(), actor_or_default(actor))
