"""One-row writes of one statement (fenced step records and outcomes, new workflows),
sent together in a batch on PostgreSQL (the group committer's ``rows``).

A batch of a busy writer holds dozens of step records and completions. Sent one
statement each, every write costs a cursor's parameter conversion and, inside
psycopg's pipeline, a turn of its send loop: a poll of the socket that lets go of the
GIL, which a process of many busy threads then has to win back, write after write. So:

- step records, the most frequent, go as **one statement** whose parameter is a JSON
  array of their parameter lists (``INSERT_STEPS_JSON``): one conversion, one send. It
  returns the rows it wrote: a record whose fence refused it (lease lost) is not among
  them, as one alone would have counted no row;
- so do new top-level workflows started at once (``CREATE_WORKFLOWS_JSON``, or with
  their READY event pushed when no executor owns them yet; a start whose ID is taken
  is not returned, and reads the workflow that holds it once the transaction
  committed: ``SqlStore.create_workflow``), and the outcomes of workflows
  without a parent, each with its event pushed (``COMPLETE_AND_NOTIFY_JSON``). Two
  writes of one workflow (one step) in a batch go the other way, below: as statements
  of their own, the second sees what the first did;
- any other such statement goes as one ``executemany``: one cursor and one parameter
  conversion for them all, each still its own statement with its own result.

A batch of nothing but one of those kinds is one statement, atomic by itself, so the
committer sends it in autocommit (``as_one``); so is a batch of step records and
outcomes (``STEPS_AND_OUTCOMES_JSON``), a running process's usual batch: records of some
workflows, the outcomes of others with the last record each carries.

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
    COMPLETE_AND_NOTIFY,
    COMPLETE_AND_NOTIFY_JSON,
    CREATE_WORKFLOW_AND_NOTIFY,
    CREATE_WORKFLOW_RETURNING,
    CREATE_WORKFLOWS_AND_NOTIFY_JSON,
    CREATE_WORKFLOWS_JSON,
    INSERT_STEP,
    INSERT_STEPS_JSON,
    STEPS_AND_OUTCOMES_JSON,
)

Connection = psycopg.Connection[TupleRow]
Reader = Callable[[], bool]
#: A batch's writes as one statement: sends it, returns a reader per write.
OneStatement = Callable[[Connection], list[Reader]]


class _Together:
    """The one-statement form of a one-row statement: the statement over a JSON array of
    the writes' parameters, and where each write's key is in its parameters (the key
    columns that the statement returns for each row it wrote, in that order)."""

    __slots__ = ("at", "statement")

    def __init__(self, statement: str, at: tuple[int, ...]) -> None:
        self.statement = POSTGRES.sql(statement)
        self.at = at

    def key(self, params: tuple[Any, ...]) -> Any:
        at = self.at
        return params[at[0]] if len(at) == 1 else tuple(params[i] for i in at)


_TOGETHER = {
    # The step's workflow ID and position.
    POSTGRES.sql(INSERT_STEP): _Together(INSERT_STEPS_JSON, (0, 1)),
    # The workflow's ID.
    POSTGRES.sql(CREATE_WORKFLOW_RETURNING): _Together(CREATE_WORKFLOWS_JSON, (0,)),
    POSTGRES.sql(CREATE_WORKFLOW_AND_NOTIFY): _Together(CREATE_WORKFLOWS_AND_NOTIFY_JSON, (0,)),
    POSTGRES.sql(COMPLETE_AND_NOTIFY): _Together(COMPLETE_AND_NOTIFY_JSON, (5,)),
}


def send_rows(conn: Connection, statement: str, params: list[Any]) -> list[Reader]:
    """Send one-row writes of ``statement`` together; a reader per write says, once the
    pipeline synced (the transaction committed), whether it wrote its row."""
    together = _TOGETHER.get(statement)
    if together is not None:
        keys = _keys(together, params)
        if keys is not None:
            return _together(conn, together.statement, params, keys)
    return _each(conn, statement, params)


def as_one(rows: list[tuple[str, Any]]) -> OneStatement | None:
    """The one statement that writes these one-row writes (a batch's, in order, as
    ``(statement, params)``), atomic by itself, so sent without a transaction (the group
    committer's ``as_one``); None if they cannot be one."""
    statement = rows[0][0]
    if all(row[0] == statement for row in rows):
        together = _TOGETHER.get(statement)
        if together is None:
            return None
        params = [row[1] for row in rows]
        keys = _keys(together, params)
        if keys is None:
            return None
        return functools.partial(_together, statement=together.statement, params=params, keys=keys)
    return _steps_and_outcomes(rows)


_STEP, _OUTCOME = POSTGRES.sql(INSERT_STEP), POSTGRES.sql(COMPLETE_AND_NOTIFY)
_MIXED = POSTGRES.sql(STEPS_AND_OUTCOMES_JSON)


def _steps_and_outcomes(rows: list[tuple[str, Any]]) -> OneStatement | None:
    """Step records and outcomes as ``STEPS_AND_OUTCOMES_JSON``: a record of a workflow
    whose outcome is in the batch rides with it (under the same lease), the others are
    fenced on their own. None for anything else, a key twice, or a record of a workflow
    completed here under another lease (one by one, the record first, it would be
    refused or not by its own fence; here it could only ride)."""
    outcomes: dict[str, tuple[Any, Any]] = {}
    for statement, params in rows:
        if statement == _OUTCOME:
            if params[5] in outcomes:
                return None
            outcomes[params[5]] = (params[6], params[7])
        elif statement != _STEP:
            return None
    completions, fenced, riding, keys = [], [], [], []
    for statement, params in rows:
        if statement == _OUTCOME:
            completions.append(params)
            keys.append((1, params[5], None))
            continue
        lease = outcomes.get(params[10])
        if lease is None:
            fenced.append(params)
        elif lease == (params[11], params[12]):
            riding.append(params)
        else:
            return None
        keys.append((0, params[0], params[1]))
    if len(set(keys)) != len(keys):
        return None
    return functools.partial(_mixed, arrays=[completions, fenced, riding], keys=keys)


def _mixed(conn: Connection, arrays: list[list[Any]], keys: list[Any]) -> list[Reader]:
    """``STEPS_AND_OUTCOMES_JSON`` over ``arrays``; a reader per write, by its key."""
    params = tuple(json.dumps(array, ensure_ascii=False) for array in arrays)
    return _readers(conn.execute(_MIXED, params), keys)


def _readers(cursor: psycopg.Cursor[TupleRow], keys: list[Any]) -> list[Reader]:
    """A reader per key: whether the statement of ``cursor`` returned that key's row (a
    row's key is its one column, or the tuple of them)."""
    written: set[Any] = set()
    read: list[bool] = []

    def wrote(key: Any) -> bool:
        if not read:  # the first reader takes the rows written, for them all
            written.update(row[0] if len(row) == 1 else tuple(row) for row in cursor.fetchall())
            read.append(True)
        return key in written

    return [functools.partial(wrote, key) for key in keys]


def _keys(together: _Together, params: list[Any]) -> list[Any] | None:
    """The writes' keys, or None if one is there twice (those go one by one)."""
    keys = [together.key(one) for one in params]
    return keys if len(set(keys)) == len(keys) else None


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


def _together(conn: Connection, statement: str, params: list[Any], keys: list[Any]) -> list[Reader]:
    """The writes of ``params`` as one ``statement`` over a JSON array of them, which
    returns the key of each row it wrote."""
    # Floats go as their repr, which PostgreSQL reads back to the same double; text as
    # it is (no \u escapes for what is not ASCII, which a database whose encoding is not
    # UTF-8 would refuse).
    return _readers(conn.execute(statement, (json.dumps(params, ensure_ascii=False),)), keys)
