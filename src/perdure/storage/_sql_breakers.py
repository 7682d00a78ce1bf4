"""The circuit breakers' operations, the same SQL on both stores (part of ``SqlStore``)."""

from __future__ import annotations

from typing import Any

from . import _statements as q
from ._base import BREAKER_TOPIC, EVENT_READY, BreakerRecord
from ._limits import check_key
from ._sql_base import SqlBase


class SqlBreakers(SqlBase):
    """Circuit breakers on a SQL store."""

    # Each runs in its own short transaction (``_write``), not in the writer's batch on
    # PostgreSQL: a close then holds the breaker's row lock only for its own statements.

    def get_breaker(self, name: str) -> BreakerRecord | None:
        rows = self._read(self._sql(q.GET_BREAKER), {"name": name})
        return BreakerRecord(*rows[0]) if rows else None

    def list_breakers(self) -> list[BreakerRecord]:
        rows = self._read(self._sql(q.LIST_BREAKERS), {"prefix": BREAKER_TOPIC})
        return [BreakerRecord(*row) for row in rows]

    def count_breaker_failure(
        self, name: str, now: float, threshold: int, window: float, retry_at: float, error: str
    ) -> bool:
        check_key("circuit breaker name", name)
        create_sql, count_sql = self._sql(q.CREATE_BREAKER), self._sql(q.COUNT_FAILURE)
        open_sql = self._sql(q.OPEN_BREAKER)
        params = {"name": name, "now": now, "window": window, "error": error, "retry_at": retry_at}

        def count(conn: Any) -> bool:
            conn.execute(create_sql, params)
            row = conn.execute(count_sql, params).fetchone()
            if row is None or row[0] < threshold:
                return False
            conn.execute(open_sql, params)
            return True

        return self._write(count)

    def claim_breaker_probe(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        sql = self._sql(q.CLAIM_PROBE)
        params = {"name": name, "holder": holder, "now": now, "expires": expires_at}
        return self._write(lambda conn: conn.execute(sql, params).fetchone() is not None)

    def close_breaker(self, name: str, now: float) -> int | None:
        close_sql, wake_sql = self._sql(q.CLOSE_BREAKER), self._sql(q.WAKE_PARKED)
        params = {"name": name, "now": now, "topic": BREAKER_TOPIC + name}

        def close(conn: Any) -> int | None:
            if conn.execute(close_sql, params).fetchone() is None:
                return None
            woken: int = conn.execute(wake_sql, params).rowcount
            if woken:
                self._notify(conn, EVENT_READY)
            return woken

        return self._write(close)

    def force_open_breaker(self, name: str, now: float, retry_at: float, reason: str) -> None:
        check_key("circuit breaker name", name)
        create_sql, open_sql = self._sql(q.CREATE_BREAKER), self._sql(q.FORCE_OPEN_BREAKER)
        params = {"name": name, "now": now, "retry_at": retry_at, "error": reason}

        def force(conn: Any) -> None:
            conn.execute(create_sql, params)
            conn.execute(open_sql, params)

        self._write(force)

    def reopen_breaker(
        self, name: str, holder: str, now: float, retry_at: float, error: str
    ) -> bool:
        sql = self._sql(q.REOPEN_BREAKER)
        params = {"name": name, "holder": holder, "now": now, "retry_at": retry_at, "error": error}
        return self._write(lambda conn: conn.execute(sql, params).fetchone() is not None)
