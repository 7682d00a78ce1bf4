"""What the figures ask of a database (one SQLite file or one PostgreSQL schema), and the
count of its workflows by status, steps and recoveries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Database(Protocol):
    """A fresh database of one figure."""

    url: str
    label: str

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]: ...

    def count(self, status: str = "SUCCEEDED") -> int: ...

    def executors(self) -> int: ...

    def summary(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def workflow_summary(rows: Callable[[str], list[Any]]) -> dict[str, int]:
    """Workflows by status (lower case), steps recorded and recoveries, from ``rows``
    (a database's query function)."""
    by_status = rows("SELECT status, count(*) FROM perdure_workflows GROUP BY status")
    steps = rows("SELECT count(*) FROM perdure_steps")[0][0]
    recoveries = rows("SELECT coalesce(sum(recoveries), 0) FROM perdure_workflows")[0][0]
    summary = {str(k).lower(): int(v) for k, v in by_status}
    summary["steps"] = int(steps)
    summary["recoveries"] = int(recoveries)
    return summary
