"""Held workflows: their code no longer replays their history, so they wait for an
operator or a new version (part of ``SqlStore``; see ``_worker/_holding.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from . import _statements as q
from ._base import EVENT_READY, Hold, Lease
from ._sql_base import SqlBase


class SqlHolds(SqlBase):
    """Holding workflows on a SQL store, and letting them go again."""

    def hold_workflow(
        self, workflow_id: str, lease: Lease, hold: Hold, note: str, now: float
    ) -> Future[bool]:
        sql = self._sql(q.HOLD_WORKFLOW)
        params = {
            "id": workflow_id,
            "owner": lease.owner,
            "epoch": lease.epoch,
            "retry_at": hold.retry_at,
            "note": note,
            "code": hold.code,
            "detail": hold.to_json(),
            "now": now,
        }

        def update(conn: Any) -> bool:
            # A returned row, not a row count: PostgreSQL's pipeline knows that only at commit.
            return conn.execute(sql, params).fetchone() is not None

        return self._writer.submit(update, f"holding workflow {workflow_id!r}")

    def release_holds(
        self, names: Sequence[str], app_version: str, codes: Sequence[str], now: float
    ) -> int:
        sql = self._sql(q.RELEASE_HOLDS)
        params = {
            "now": now,
            "version": app_version,
            "codes": self._dialect.text_list(codes),
            "names": self._dialect.text_list(names),
        }

        def release(conn: Any) -> int:
            released: int = conn.execute(sql, params).rowcount
            if released:
                self._notify(conn, EVENT_READY)
            return released

        return self._write(release)

    def retry_held(self, workflow_id: str, now: float) -> bool:
        sql = self._sql(q.RETRY_HELD)

        def retry(conn: Any) -> bool:
            due = conn.execute(sql, {"id": workflow_id, "now": now}).fetchone() is not None
            if due:
                self._notify(conn, EVENT_READY)
            return due

        return self._write(retry)
