"""Firing schedules: the part of an executor's maintenance that starts the runs of ticks.

Every launched executor does it, and exactly one of them fires each tick: the store
advances a schedule only from the revision the executor read (``Store.fire_schedule``)
and starts each tick under its deterministic workflow ID in the same transaction (see
``perdure._schedules``). It looks at the schedules table at most once a second, and
at the time of the next tick it knows of; the workflows it starts are PENDING and
unowned, and any executor claims them like any other.

An executor fires the schedules it can run: those its code declares (``@app.schedule``)
and those created at run time (``app.create_schedule``) whose workflow it registers.
"""

from __future__ import annotations

import logging

from .._errors import StoreError
from .._schedules import ScheduleRecord, ScheduleSource, ScheduleSpec, plan, tick_id
from .._serialization import encode_call
from ..storage import NewWorkflow
from ._host import WorkerHost

log = logging.getLogger("perdure")

#: Seconds between looks at the schedules table when no tick is due sooner.
LOOK_INTERVAL = 1.0


class Scheduler:
    """Fires the due ticks of the schedules one executor can run."""

    def __init__(self, host: WorkerHost, executor_id: str) -> None:
        self.host = host
        self.executor_id = executor_id
        # What this executor last wrote of the schedules its code declares.
        self._declared: dict[str, ScheduleSpec] = {}
        self._next_look = 0.0
        # Schedules whose firing failed, by name: reported once until one succeeds.
        self._failing: set[str] = set()

    def declare(self, now: float) -> None:
        """Write the definitions of the schedules declared in code (at launch, and when
        the code declares another one)."""
        declared = dict(self.host.registry.schedules)
        for spec in declared.values():
            if self._declared.get(spec.name) != spec:
                self.host.store.put_schedule(spec, ScheduleSource.CODE.value, now)
        self._declared = declared

    def run(self, now: float) -> tuple[float, bool]:
        """Fire every due tick this executor can; returns when to look next and whether
        it started any workflow (the caller then claims at once)."""
        # A schedule the code declared since the last look is written at once (its ticks
        # count from the time it is written).
        changed = self._declared != self.host.registry.schedules
        if now < self._next_look and not changed:
            return self._next_look, False
        if changed:
            self.declare(now)
        look = now + LOOK_INTERVAL
        started = False
        for record in self.host.store.list_schedules():
            if record.paused or not self._ours(record):
                continue
            if record.next_tick is not None and record.next_tick > now:
                look = min(look, record.next_tick)
                continue
            try:
                fired, next_tick = self._fire(record, now)
            except StoreError:
                raise  # the maintenance round fails, and is retried with backoff
            except Exception as exc:  # noqa: BLE001 - one bad schedule must not stop the rest
                if record.name not in self._failing:
                    self._failing.add(record.name)
                    log.error("schedule %r cannot fire: %s", record.name, exc)
                continue
            self._failing.discard(record.name)
            started |= fired
            # Lost to another executor: look again soon, at the state it left.
            look = min(look, next_tick if next_tick is not None else now + 0.1)
        self._next_look = look
        return look, started

    def next_fire(self, now: float) -> float | None:
        """When this executor fires a tick next, as far as the store says now: the
        earliest next tick of the schedules it fires (at or before ``now``: one is due),
        its next look for one whose next tick is not computed yet, ``now`` when the code
        declared a schedule not written yet; None when it fires none. Schedules whose
        firing fails are left out (they are retried at each look, not waited for).
        Time skipping (``perdure.testing``) counts it as a wake time."""
        if self._declared != self.host.registry.schedules:
            return now
        earliest: float | None = None
        for record in self.host.store.list_schedules():
            if record.paused or record.name in self._failing or not self._ours(record):
                continue
            when = self._next_look if record.next_tick is None else record.next_tick
            earliest = when if earliest is None else min(earliest, when)
        return earliest

    def _ours(self, record: ScheduleRecord) -> bool:
        registry = self.host.registry
        if record.workflow not in registry.workflows:
            return False
        if record.source == ScheduleSource.CODE:
            # A schedule declared in code that this code no longer declares is not fired
            # here (its row stays until deleted: ``app.delete_schedule``).
            return record.name in registry.schedules
        return True

    def _fire(self, record: ScheduleRecord, now: float) -> tuple[bool, float | None]:
        """Fire one schedule: (whether workflows were started, its next tick, or None
        when another executor changed it first)."""
        spec = record.spec
        due = plan(spec, record.last_tick, now)
        definition = self.host.registry.workflows[spec.workflow]
        settings = self.host.settings
        what = f"workflow {definition.name!r} (schedule {spec.name!r})"
        workflows = [
            NewWorkflow(
                id=tick_id(spec.name, tick),
                name=definition.name,
                inputs=encode_call(self.host.serializer, definition.fn, (tick,), {}, what),
                serializer=self.host.serializer.name,
                app_version=settings.app_version,
                created_at=now,
            )
            for tick in due.run
        ]
        store = self.host.store
        if not store.fire_schedule(
            spec.name, record.revision, due.last_tick, due.next_tick, workflows, now
        ):
            return False, None
        if due.skipped:
            log.warning(
                "schedule %r: %d tick(s) (or more) missed while no executor fired them were "
                "skipped (catch_up=%r)",
                spec.name,
                due.skipped,
                str(spec.catch_up),
            )
        return bool(workflows), due.next_tick
