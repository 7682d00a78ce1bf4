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
from ._statements import INSERT_STEP, INSERT_STEPS_JSON

Connection = psycopg.Connection[TupleRow]
Reader = Callable[[], bool]

_INSERT_STEP = POSTGRES.sql(INSERT_STEP)
_INSERT_STEPS_JSON = POSTGRES.sql(INSERT_STEPS_JSON)


def send_rows(conn: Connection, statement: str, params: list[Any]) -> list[Reader]:
    """Send fenced one-row writes of ``statement`` together; a reader per write says,
    once the pipeline synced (the transaction committed), whether it wrote its row."""
    if statement == _INSERT_STEP:
        return _step_records(conn, params)
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


def _step_records(conn: Connection, params: list[Any]) -> list[Reader]:
    """Step records (``INSERT_STEP``'s parameters each) in one statement."""
    # Floats go as their repr, which PostgreSQL reads back to the same double; text as
    # it is (no \u escapes for what is not ASCII, which a database whose encoding is not
    # UTF-8 would refuse).
    cursor = conn.execute(_INSERT_STEPS_JSON, (json.dumps(params, ensure_ascii=False),))
    written: set[tuple[str, str]] = set()
    read: list[bool] = []

    def wrote(key: tuple[str, str]) -> bool:
        if not read:  # the first reader takes the rows written, for them all
            written.update(cursor.fetchall())
            read.append(True)
        return key in written

    return [functools.partial(wrote, (record[0], record[1])) for record in params]
