"""Streams: the entries a workflow appends under a key, the same SQL on both stores (a
layer over ``SqlStore``).

An entry's offset is the next number of its stream, computed in the statement that
inserts it. Only the workflow's owner passes the fence (the lease check locks the
workflow's row, which a claim locks too), its writes go through one writer connection,
and a transactional step's own connection takes the stream's lock first
(``_lock_stream``), so a stream's entries are numbered one after the other and commit in
their order: a reader that has seen offset n never meets a smaller one later.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from .._errors import ConfigurationError, StoreError
from ._base import EVENT_STREAM, Lease, StepRecord, StreamEntry
from ._limits import check_key
from ._sql import SqlStore, step_params
from ._statements import FENCE_FREE_POSITION, INSERT_STEP_RETURNING

# The lease check of a write from inside a step (PostgreSQL: the row lock a step record
# takes, so that a claim in flight is waited for; see INSERT_STEP).
FENCE_LEASE = (
    "SELECT 1 FROM perdure_workflows WHERE id = :id AND (owner = :owner AND epoch = :epoch "
    "AND status = {RUNNING}) IS TRUE{key_share}"
)
IS_CLOSED = "SELECT 1 FROM perdure_streams WHERE workflow_id = :id AND key = :key AND value IS NULL"
APPEND = (
    "INSERT INTO perdure_streams (workflow_id, key, seq, value, writer, written_at) "
    "SELECT :id{text}, :key{text}, COALESCE(max(seq) + 1, 0), :value{text}, :writer{text}, "
    ":now{real} FROM perdure_streams WHERE workflow_id = :id AND key = :key RETURNING seq"
)
READ = (
    "SELECT seq, value, writer, written_at FROM perdure_streams WHERE workflow_id = :id "
    "AND key = :key AND seq >= :start ORDER BY seq LIMIT :limit"
)


def closed_error(workflow_id: str, key: str) -> ConfigurationError:
    """The error of a write to a stream that was closed."""
    return ConfigurationError(
        f"stream {key!r} of workflow {workflow_id!r} is closed (perdure.close_stream): "
        "nothing more can be written to it; write to another key"
    )


class SqlStreams(SqlStore):
    """Streams on a SQL store."""

    def _lock_stream(self, conn: Any, workflow_id: str, key: str) -> None:
        """Hold the stream's appends one at a time until this transaction ends (SQLite's
        one writer does: nothing to do)."""

    def append_entry(
        self,
        conn: Any,
        workflow_id: str,
        key: str,
        value: str | None,
        writer: str,
        now: float,
    ) -> int:
        """Append an entry inside the caller's transaction, whose fence has passed; its
        offset. Raises ``ConfigurationError`` when the stream is closed."""
        params = {
            "id": workflow_id,
            "key": key,
            "value": value,
            "writer": writer,
            "now": now,
        }
        self._lock_stream(conn, workflow_id, key)
        if conn.execute(self._sql(IS_CLOSED), params).fetchone() is not None:
            raise closed_error(workflow_id, key)
        row = conn.execute(self._sql(APPEND), params).fetchone()
        if row is None:
            raise StoreError(f"stream {key!r} of workflow {workflow_id!r}: no entry appended")
        self._notify(conn, EVENT_STREAM + workflow_id)
        return int(row[0])

    def write_stream(
        self,
        workflow_id: str,
        lease: Lease,
        key: str,
        value: str | None,
        writer: str,
        now: float,
        step: StepRecord | None = None,
    ) -> Future[int | None]:
        check_key("stream key", key)
        fence = {
            "id": workflow_id,
            "owner": lease.owner,
            "epoch": lease.epoch,
            "position": step.position if step is not None else "",
        }
        fence_sql = self._sql(FENCE_LEASE) if step is None else self._sql(FENCE_FREE_POSITION)
        insert_sql = self._sql(INSERT_STEP_RETURNING)

        def write(conn: Any) -> int | None:
            if conn.execute(fence_sql, fence).fetchone() is None:
                return None
            offset = self.append_entry(conn, workflow_id, key, value, writer, now)
            if step is not None:
                recorded = StepRecord(
                    step.position, step.name, step.status, str(offset), None, 1, None, now
                )
                if conn.execute(insert_sql, step_params(workflow_id, lease, recorded)).fetchone():
                    return offset
                raise StoreError(f"could not record the stream write of workflow {workflow_id!r}")
            return offset

        what = "closing" if value is None else "writing to"
        return self._writer.submit(write, f"{what} stream {key!r} of workflow {workflow_id!r}")

    def read_stream(
        self, workflow_id: str, key: str, start: int = 0, limit: int = 1000
    ) -> list[StreamEntry]:
        params = {"id": workflow_id, "key": key, "start": start, "limit": limit}
        return [
            StreamEntry(int(r[0]), r[1], r[2], r[3]) for r in self._read(self._sql(READ), params)
        ]
