"""Executors and their leases on a SQL store (part of ``SqlStore``): an executor's row
is the lease of every workflow it owns (``HELD_BY_EXECUTOR``), so a heartbeat writes
one row however many workflows it runs, and the workflows of one whose lease lapsed
are released by whichever worker finds it so (``Maintenance.dead_owners``)."""

from __future__ import annotations

from typing import Any

from . import _statements as q
from ._base import EVENT_READY, ExecutorRecord
from ._sql_base import SqlBase


class SqlExecutors(SqlBase):
    """Registering executors, renewing their leases and releasing their workflows."""

    def register_executor(self, executor: ExecutorRecord) -> None:
        sql = self._sql(q.REGISTER_EXECUTOR)
        params = {
            "id": executor.id,
            "host": executor.host,
            "pid": executor.pid,
            "app_version": executor.app_version,
            "started_at": executor.started_at,
            "heartbeat_at": executor.heartbeat_at,
            "lease": executor.lease_expires_at,
            "stopped_at": executor.stopped_at,
        }
        self._write(lambda conn: conn.execute(sql, params))

    def list_executors(self) -> list[ExecutorRecord]:
        return [ExecutorRecord(*row) for row in self._read(self._sql(q.LIST_EXECUTORS))]

    def owned_workflows(self, executor_id: str) -> list[str]:
        return [row[0] for row in self._read(self._sql(q.OWNED), {"owner": executor_id})]

    def heartbeat(self, executor_id: str, now: float, lease_expires_at: float) -> set[str]:
        renew_sql, owned_sql = self._sql(q.RENEW_EXECUTOR), self._sql(q.OWNED)
        params = {"id": executor_id, "owner": executor_id, "now": now, "lease": lease_expires_at}

        def renew(conn: Any) -> set[str]:
            # One row, however many workflows run here. The update waits for a release
            # of this executor that holds its row (release_expired); the next statement
            # then sees what that release took.
            conn.execute(renew_sql, params)
            return {row[0] for row in conn.execute(owned_sql, params).fetchall()}

        return self._write(renew)

    def release_workflows(self, executor_id: str, now: float) -> int:
        return self._release(executor_id, now, only_expired=False) or 0

    def release_expired(self, executor_id: str, now: float) -> int | None:
        return self._release(executor_id, now, only_expired=True)

    def _release(self, executor_id: str, now: float, only_expired: bool) -> int | None:
        expired_sql = self._sql(q.EXPIRED_EXECUTOR)
        release_sql = self._sql(q.RELEASE_UNLOCKED if only_expired else q.RELEASE)
        stop_sql = self._sql(q.STOP_IF_RELEASED if only_expired else q.STOP_EXECUTOR)
        params = {"owner": executor_id, "now": now}

        def release(conn: Any) -> int | None:
            if only_expired and conn.execute(expired_sql, params).fetchone() is None:
                return None
            released: int = conn.execute(release_sql, params).rowcount
            conn.execute(stop_sql, params)
            if released:
                self._notify(conn, EVENT_READY)
            return released

        return self._write(release)
