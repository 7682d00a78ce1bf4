"""The schedules' operations, the same SQL on both stores (part of ``SqlStore``).

Each runs in its own short transaction (``_write``). A firing is one transaction: the
schedule's row advances only if its revision is the one the executor read (on
PostgreSQL a concurrent firing waits for the row lock, then finds the revision moved
and changes nothing), and only then are the ticks' workflows inserted, each under its
deterministic ID: a tick is started exactly once, or not at all.

An operator's change (``actor`` given) is logged in the actions log by the transaction
that makes it, under the schedule's pseudo workflow ID (``perdure.schedule:<name>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._model import SCHEDULE_SUBJECT, OperatorAction, subject_of
from .._schedules import ScheduleRecord, ScheduleSpec
from ._base import EVENT_READY, NewWorkflow
from ._limits import check_key
from ._sql_base import SqlBase, create_params

SCHEDULE_COLUMNS = (
    "name, workflow, cron, tz, catch_up, grace, source, paused, last_tick, next_tick, "
    "last_workflow_id, revision, created_at, updated_at"
)

# A changed definition moves the revision (a firing computed from the old one is refused)
# and clears next_tick (an executor computes it again, from the same last tick); an
# unchanged one is left alone (RETURNING nothing: the caller reads it).
PUT_SCHEDULE = (
    f"INSERT INTO perdure_schedules ({SCHEDULE_COLUMNS}) VALUES (:name, :workflow, :cron, "
    ":tz, :catch_up, :grace, :source, 0, :now, NULL, NULL, 0, :now, :now) "
    "ON CONFLICT (name) DO UPDATE SET workflow = excluded.workflow, cron = excluded.cron, "
    "tz = excluded.tz, catch_up = excluded.catch_up, grace = excluded.grace, "
    "source = excluded.source, next_tick = NULL, revision = perdure_schedules.revision + 1, "
    "updated_at = excluded.updated_at "
    "WHERE perdure_schedules.workflow <> excluded.workflow "
    "OR perdure_schedules.cron <> excluded.cron OR perdure_schedules.tz <> excluded.tz "
    "OR perdure_schedules.catch_up <> excluded.catch_up "
    "OR perdure_schedules.grace <> excluded.grace "
    "OR perdure_schedules.source <> excluded.source "
    f"RETURNING {SCHEDULE_COLUMNS}"
)
GET_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS} FROM perdure_schedules WHERE name = :name"
LIST_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM perdure_schedules ORDER BY name"
FIRE_SCHEDULE = (
    "UPDATE perdure_schedules SET last_tick = :last_tick, next_tick = :next_tick, "
    "last_workflow_id = COALESCE(:workflow_id{text}, last_workflow_id), "
    "revision = revision + 1, updated_at = :now "
    "WHERE name = :name AND revision = :revision AND paused = 0 RETURNING name"
)
PAUSE_SCHEDULE = (
    "UPDATE perdure_schedules SET paused = 1, revision = revision + 1, updated_at = :now "
    "WHERE name = :name AND paused = 0 RETURNING name"
)
# Ticks that came while paused never run: the schedule goes on from now.
RESUME_SCHEDULE = (
    "UPDATE perdure_schedules SET paused = 0, last_tick = :now, next_tick = NULL, "
    "revision = revision + 1, updated_at = :now "
    "WHERE name = :name AND paused = 1 RETURNING name"
)
DELETE_SCHEDULE = "DELETE FROM perdure_schedules WHERE name = :name RETURNING name"


def _record(row: Any) -> ScheduleRecord:
    values = list(row)
    values[7] = bool(values[7])
    return ScheduleRecord(*values)


class SqlSchedules(SqlBase):
    """Schedules on a SQL store."""

    def put_schedule(
        self, spec: ScheduleSpec, source: str, now: float, actor: str | None = None
    ) -> ScheduleRecord:
        check_key("schedule name", spec.name)
        check_key("workflow name", spec.workflow)
        put_sql, get_sql = self._sql(PUT_SCHEDULE), self._sql(GET_SCHEDULE)
        params = {
            "name": spec.name,
            "workflow": spec.workflow,
            "cron": spec.cron,
            "tz": spec.tz,
            "catch_up": str(spec.catch_up),
            "grace": spec.grace,
            "source": source,
            "now": now,
        }

        def put(conn: Any) -> ScheduleRecord:
            row = conn.execute(put_sql, params).fetchone()
            if row is None:
                row = conn.execute(get_sql, params).fetchone()
            if actor is not None:
                details = {k: params[k] for k in ("workflow", "cron", "tz", "catch_up", "grace")}
                subject = subject_of(SCHEDULE_SUBJECT, spec.name)
                self._log_action(conn, subject, OperatorAction.CREATE_SCHEDULE, actor, details, now)
            return _record(row)

        return self._write(put)

    def list_schedules(self) -> list[ScheduleRecord]:
        return [_record(row) for row in self._read(self._sql(LIST_SCHEDULES))]

    def fire_schedule(
        self,
        name: str,
        revision: int,
        last_tick: float,
        next_tick: float,
        workflows: Sequence[NewWorkflow],
        now: float,
    ) -> bool:
        for new in workflows:
            check_key("workflow ID", new.id)
        fire_sql, hot = self._sql(FIRE_SCHEDULE), self._hot
        create_sql, returns = hot.create_workflow, hot.create_returns
        params = {
            "name": name,
            "revision": revision,
            "last_tick": last_tick,
            "next_tick": next_tick,
            "workflow_id": workflows[-1].id if workflows else None,
            "now": now,
        }

        def fire(conn: Any) -> bool:
            if conn.execute(fire_sql, params).fetchone() is None:
                return False
            created = 0
            for new in workflows:
                cursor = conn.execute(create_sql, create_params(new, None, None))
                created += (cursor.fetchone() is not None) if returns else cursor.rowcount == 1
            if created:
                self._notify(conn, EVENT_READY)
            return True

        return self._write(fire)

    def pause_schedule(
        self, name: str, paused: bool, now: float, actor: str | None = None
    ) -> bool | None:
        change_sql = self._sql(PAUSE_SCHEDULE if paused else RESUME_SCHEDULE)
        get_sql = self._sql(GET_SCHEDULE)
        params = {"name": name, "now": now}
        action = OperatorAction.PAUSE_SCHEDULE if paused else OperatorAction.RESUME_SCHEDULE

        def change(conn: Any) -> bool | None:
            if conn.execute(change_sql, params).fetchone() is not None:
                if actor is not None:
                    subject = subject_of(SCHEDULE_SUBJECT, name)
                    self._log_action(conn, subject, action, actor, {}, now)
                return True
            return False if conn.execute(get_sql, params).fetchone() is not None else None

        return self._write(change)

    def delete_schedule(self, name: str, now: float = 0.0, actor: str | None = None) -> bool:
        sql = self._sql(DELETE_SCHEDULE)

        def delete(conn: Any) -> bool:
            if conn.execute(sql, {"name": name}).fetchone() is None:
                return False
            if actor is not None:
                subject = subject_of(SCHEDULE_SUBJECT, name)
                self._log_action(conn, subject, OperatorAction.DELETE_SCHEDULE, actor, {}, now)
            return True

        return self._write(delete)
