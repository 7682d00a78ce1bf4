"""Fenced one-row writes of one statement, sent together in a batch on PostgreSQL (the
group committer's ``rows``).

A batch of a busy writer holds dozens of step records and completions. Sent one
statement each, every write costs a cursor's parameter conversion and, inside
psycopg's pipeline, a turn of its send loop: a poll of the socket that lets go of the
GIL, which a process of many busy threads then has to win back, write after write. So:

- step records, the most frequent, go as **one statement** whose parameter is a JSON
  array of their parameter lists (``INSERT_STEPS_JSON``): one conversion, one send. It
  returns the rows it wrote: a record whose fence refused it (lease lost) is not among
  them, as one alone would have counted no row;
- so do new top-level workflows started at once (``CREATE_WORKFLOWS_JSON``; a start
  whose ID is taken is not returned, and reads the workflow that holds it once the
  transaction committed: ``SqlStore.create_workflow``). Two starts of one ID in a batch
  go the other way, below, where the second finds the first's row;
- any other such statement goes as one ``executemany``: one cursor and one parameter
  conversion for them all, each still its own statement with its own result.

If the statement fails, the batch's transaction rolls back and the committer runs each
write of it again on its own (``_batch``), so a bad record fails alone, as before.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from ._dialect import POSTGRES
from ._statements import (
    CREATE_WORKFLOW_RETURNING,
    CREATE_WORKFLOWS_JSON,
    INSERT_STEP,
    INSERT_STEPS_JSON,
)

Connection = psycopg.Connection[TupleRow]
Reader = Callable[[], bool]

_INSERT_STEP = POSTGRES.sql(INSERT_STEP)
_INSERT_STEPS_JSON = POSTGRES.sql(INSERT_STEPS_JSON)
_CREATE_WORKFLOW = POSTGRES.sql(CREATE_WORKFLOW_RETURNING)
_CREATE_WORKFLOWS_JSON = POSTGRES.sql(CREATE_WORKFLOWS_JSON)


def send_rows(conn: Connection, statement: str, params: list[Any]) -> list[Reader]:
    """Send fenced one-row writes of ``statement`` together; a reader per write says,
    once the pipeline synced (the transaction committed), whether it wrote its row."""
    if statement == _INSERT_STEP:
        return _together(conn, _INSERT_STEPS_JSON, params, _step_key)
    if statement == _CREATE_WORKFLOW and len({start[0] for start in params}) == len(params):
        return _together(conn, _CREATE_WORKFLOWS_JSON, params, _workflow_key)
    return _each(conn, statement, params)


def _each(conn: Connection, statement: str, params: list[Any]) -> list[Reader]:
    """One ``executemany`` in the batch's pipeline; a rowcount per write."""
    cursor = conn.cursor()
    cursor.executemany(statement, params, returning=True)
    counts: list[int] = []

    def count(index: int) -> bool:
        if not counts:  # the first reader walks the results of them all
            while True:
                counts.append(cursor.rowcount)
                if not cursor.nextset():
                    break
        return counts[index] == 1

    return [functools.partial(count, index) for index in range(len(params))]


def _step_key(params: tuple[Any, ...]) -> tuple[str, str]:
    return str(params[0]), str(params[1])  # the step's workflow ID and position


def _workflow_key(params: tuple[Any, ...]) -> str:
    return str(params[0])  # the workflow's ID


def _together(
    conn: Connection, statement: str, params: list[Any], key: Callable[[Any], Any]
) -> list[Reader]:
    """The writes of ``params`` as one ``statement`` over a JSON array of them, which
    returns the key of each row it wrote."""
    # Floats go as their repr, which PostgreSQL reads back to the same double; text as
    # it is (no \u escapes for what is not ASCII, which a database whose encoding is not
    # UTF-8 would refuse).
    cursor = conn.execute(statement, (json.dumps(params, ensure_ascii=False),))
    written: set[Any] = set()
    read: list[bool] = []

    def wrote(one: Any) -> bool:
        if not read:  # the first reader takes the rows written, for them all
            written.update(row[0] if len(row) == 1 else tuple(row) for row in cursor.fetchall())
            read.append(True)
        return one in written

    return [functools.partial(wrote, key(one)) for one in params]
