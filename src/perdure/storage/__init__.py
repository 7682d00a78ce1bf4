"""Storage: the one interface between the engine and a database, and its implementations.

``open_store(url)`` picks the implementation by the URL's scheme.
"""

from __future__ import annotations

from .._errors import ConfigurationError
from .._text import redact_url
from ._base import (
    ACTIVE_STATUSES,
    BREAKER_CLOSED,
    BREAKER_HALF_OPEN,
    BREAKER_OPEN,
    BREAKER_TOPIC,
    CANCELLED,
    CHILD_TOPIC,
    EVENT_CANCEL,
    EVENT_DONE,
    EVENT_EVENT,
    EVENT_READY,
    EVENT_RESYNC,
    EVENT_STREAM,
    EVENT_WAKE,
    FAILED,
    FOREVER,
    HELD_BY_EXECUTOR,
    PENDING,
    RUNNING,
    STEP_CANCELLED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_SUCCEEDED,
    STEP_WAITING,
    SUCCEEDED,
    TERMINAL_STATUSES,
    ActionRecord,
    BreakerRecord,
    EventRecord,
    ExecutorRecord,
    Hold,
    Lease,
    MessageRecord,
    NewWorkflow,
    StepRecord,
    Store,
    StreamEntry,
    Transaction,
    WorkflowRecord,
    lease_expiry,
)
from ._batch import queue_only
from ._limits import MAX_KEY_BYTES, check_key

__all__ = [
    "queue_only",
    "ACTIVE_STATUSES",
    "BREAKER_CLOSED",
    "BREAKER_HALF_OPEN",
    "BREAKER_OPEN",
    "BREAKER_TOPIC",
    "CANCELLED",
    "CHILD_TOPIC",
    "EVENT_CANCEL",
    "EVENT_DONE",
    "EVENT_EVENT",
    "EVENT_READY",
    "EVENT_RESYNC",
    "EVENT_STREAM",
    "EVENT_WAKE",
    "FAILED",
    "FOREVER",
    "HELD_BY_EXECUTOR",
    "MAX_KEY_BYTES",
    "PENDING",
    "RUNNING",
    "STEP_CANCELLED",
    "STEP_FAILED",
    "STEP_RETRYING",
    "STEP_SUCCEEDED",
    "STEP_WAITING",
    "SUCCEEDED",
    "TERMINAL_STATUSES",
    "ActionRecord",
    "BreakerRecord",
    "EventRecord",
    "ExecutorRecord",
    "Hold",
    "Lease",
    "MessageRecord",
    "NewWorkflow",
    "StepRecord",
    "Store",
    "StreamEntry",
    "Transaction",
    "WorkflowRecord",
    "check_key",
    "lease_expiry",
    "open_store",
]


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (but do not migrate) the store that ``url`` names.

    With ``create=False`` the database must already hold perdure's schema (``exists``):
    a missing SQLite file, or a PostgreSQL schema that ``migrate`` never set up (a
    mistyped ``?schema=``), is refused with a ``ConfigurationError`` that names it, and
    nothing is created. For what only reads, such as the CLI's ``list`` and ``status``.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from ._sqlite import SQLiteStore

        return SQLiteStore(url, create=create)
    if scheme in ("postgresql", "postgres"):
        try:
            from ._postgres import PostgresStore
        except ImportError as exc:
            raise ConfigurationError(
                f"a PostgreSQL URL needs psycopg 3 ({exc}): pip install 'perdure[postgres]'"
            ) from exc

        return PostgresStore(url, create=create)
    raise ConfigurationError(
        f"unsupported database URL {redact_url(url)!r}: use sqlite:///path/to/file.db or "
        "postgresql://..."
    )
