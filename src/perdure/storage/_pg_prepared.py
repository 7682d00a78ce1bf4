"""A lone statement of the hot path sent straight through libpq, as a prepared statement.

The writer's batches of one statement (a step record, a start, an outcome, a busy
writer's batch joined into one statement) are each one round trip in autocommit (see
``_pg_session.SingleStatement``). psycopg's ``Cursor.execute`` spends about 60 µs of the
calling thread's CPU on each (this machine, psycopg 3.3): its query conversion and
prepared-statement bookkeeping, a dumper per parameter. ``PGconn.send_query_prepared``
with the parameters already in text form, its result waited for by psycopg's own wait
(``Connection.wait`` of the C ``execute`` generator), spends about 30-35: the
difference is a tenth of a step's time on PostgreSQL, and CPU that the workflows, the
writer and the server share on a small machine (``docs/performance.md``, "A lone
statement through libpq").

Only what has exactly the same meaning goes this way: a ``str`` query with positional
``%s`` placeholders, parameters that are ``None``, ``str`` or a subclass of it such as
the states' enums (psycopg sends those as their string, too; without NUL, which a text
parameter would cut short), ``int`` (not ``bool``) where the server typed the
parameter as a number and finite ``float`` where it typed it as a fraction (psycopg
sends numbers typed; the server types a prepared statement's parameters from where they
stand, as it does psycopg's untyped strings), on a UTF-8 connection, in text format.
Anything else, and a statement the server will not prepare without types, goes through
psycopg's cursor as before. Errors are psycopg's own
exceptions, built from the result as psycopg builds them, so ``_pg_session.translate``
and ``broken`` read them unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

import psycopg
from psycopg import errors
from psycopg.adapt import Transformer
from psycopg.generators import execute as results_of
from psycopg.pq import ConnStatus, DiagnosticField, ExecStatus, Format
from psycopg.rows import TupleRow

Connection = psycopg.Connection[TupleRow]
Cursor = psycopg.Cursor[TupleRow]

#: Statements prepared per connection, at most: the hot path's are a handful; a query
#: built per call (a list's length in it) must not fill the server's memory.
MAX_PREPARED = 64

_PLACEHOLDER = re.compile(r"%(.)")
_TUPLES_OK = ExecStatus.TUPLES_OK
_COMMAND_OK = ExecStatus.COMMAND_OK
_FATAL_ERROR = ExecStatus.FATAL_ERROR
_TEXT = Format.TEXT
_BAD = ConnStatus.BAD
_SQLSTATE = DiagnosticField.SQLSTATE
#: invalid_sql_statement_name: "prepared statement ... does not exist".
_NO_STATEMENT = b"26000"


def numbered(query: str) -> bytes | None:
    """``query`` with ``$1, $2, ...`` for its ``%s`` placeholders (``%%`` is a ``%``), or
    None if it has another kind (named ones, binary ``%b``): those stay psycopg's."""
    count = 0
    plain = True

    def number(match: re.Match[str]) -> str:
        nonlocal count, plain
        kind = match.group(1)
        if kind == "%":
            return "%"
        if kind != "s":
            plain = False
            return match.group(0)
        count += 1
        return f"${count}"

    converted = _PLACEHOLDER.sub(number, query)
    return converted.encode() if plain else None


#: The parameter types (OIDs) where a number in text form means what psycopg's typed
#: number means: an ``int`` (psycopg: int2, int4, int8 or numeric) anywhere numeric, a
#: ``float`` (psycopg: float8) where a fraction is kept. Elsewhere (a parameter the
#: server typed as text from where it stands, such as a bare ``SELECT %s``) the value
#: goes through psycopg, which sends it typed.
_INT_TYPES = frozenset((20, 21, 23, 700, 701, 1700))  # int8, int2, int4, float4, float8, numeric
_FLOAT_TYPES = frozenset((700, 701, 1700))
_TAKES_FLOAT = 2
_TAKES_INT = 1


def kinds_of(types: list[int]) -> tuple[int, ...]:
    """For each parameter type of a prepared statement, which numbers it takes in text
    form (see ``text_params``)."""
    return tuple(
        _TAKES_FLOAT if oid in _FLOAT_TYPES else _TAKES_INT if oid in _INT_TYPES else 0
        for oid in types
    )


def text_params(params: Any, kinds: tuple[int, ...]) -> list[bytes | None] | None:
    """The parameters in PostgreSQL's text form, for a statement whose parameters take
    ``kinds`` of numbers (``kinds_of``), or None if one of them needs psycopg: its own
    type, or a value whose text form would not mean the same there."""
    if params is None:
        params = ()
    elif type(params) is not tuple and type(params) is not list:
        return None  # named parameters
    if len(params) != len(kinds):
        return None  # psycopg says what is wrong
    values: list[bytes | None] = []
    append = values.append
    for value, takes in zip(params, kinds):  # noqa: B905 - lengths checked above
        kind = type(value)
        if value is None:
            append(None)
        elif kind is str or isinstance(value, str):  # also the states, str enums
            # psycopg sends a string untyped too: the server reads it as here.
            if "\x00" in value:
                return None  # psycopg refuses it; a text parameter would end there
            append(value.encode())
        elif kind is int and takes:
            append(str(value).encode())
        elif kind is float and takes == _TAKES_FLOAT and math.isfinite(value):
            append(repr(value).encode())
        else:
            return None
    return values


class RawStatement:
    """A cursor for the one statement of a batch alone: ``execute`` sends it as a prepared
    statement through libpq when it can (see the module), else through ``cursor``, and
    answers ``rowcount``, ``fetchone`` and ``fetchall`` as a psycopg cursor does. One per
    connection and writer, used under the writer's commit lock."""

    __slots__ = (
        "_conn",
        "_count",
        "_cursor",
        "_names",
        "_pgconn",
        "_pos",
        "_result",
        "_tx",
        "_usable",
        "format",
        "rowcount",
    )

    def __init__(self, cursor: Cursor) -> None:
        conn = cursor.connection
        self._conn = conn
        self._cursor = cursor
        self._pgconn = conn.pgconn
        # query -> its prepared statement's name and the numbers each parameter takes
        # (``kinds_of``), or None: psycopg's to send.
        self._names: dict[str, tuple[bytes, tuple[int, ...]] | None] = {}
        # Names are never used twice on a connection: one prepared again after it was
        # deallocated gets a new one, whatever else is left.
        self._count = 0
        # Text parameters are encoded as UTF-8 (``text_params``).
        self._usable = conn.info.encoding == "utf-8"
        self._tx = Transformer(conn)
        self._result: Any = None
        self._pos = 0
        self.format = _TEXT
        self.rowcount = -1

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None) -> Any:
        """Run ``query`` with ``params``; returns this (or psycopg's cursor, which ran it)."""
        prepared = values = None
        if self._usable and type(query) is str and self.format is _TEXT and prepare is not False:
            prepared = self._prepared(query)
            if prepared is not None:
                values = text_params(params, prepared[1])
        if prepared is None or values is None:
            cursor = self._cursor
            cursor.format = self.format
            return cursor.execute(query, params, prepare=prepare)
        send = self._pgconn.send_query_prepared
        result = self._exchange(send, prepared[0], values)
        if result.status == _FATAL_ERROR and result.error_field(_SQLSTATE) == _NO_STATEMENT:
            # Gone with all the others: psycopg sends DEALLOCATE ALL after a ROLLBACK on
            # this connection (a failed batch's), as PgBouncer may after a session's
            # reset. Nothing ran: prepare again and send it once more.
            self._names.clear()
            prepared = self._prepared(query)
            if prepared is None:
                return self.execute(query, params, prepare=prepare)  # psycopg's now
            result = self._exchange(send, prepared[0], values)
        self._check(result)
        self._read(result)
        return self

    def _prepared(self, query: str) -> tuple[bytes, tuple[int, ...]] | None:
        names = self._names
        try:
            return names[query]
        except KeyError:
            pass
        prepared = None
        text = numbered(query) if len(names) < MAX_PREPARED else None
        if text is not None:
            pgconn = self._pgconn
            name = f"perdure_{self._count}".encode()
            self._count += 1
            result = self._exchange(pgconn.send_prepare, name, text)
            if result.status == _COMMAND_OK:
                # The types the server gave its parameters (one more round trip, once).
                described = self._exchange(pgconn.send_describe_prepared, name)
                self._check(described)
                types = [described.param_type(i) for i in range(described.nparams)]
                prepared = (name, kinds_of(types))
            elif pgconn.status == _BAD:
                self._raise(result)
            # Else a statement the server cannot type without psycopg's types (or a bad
            # one, which psycopg then reports as it always did): psycopg's.
        names[query] = prepared
        return prepared

    def _exchange(self, send: Callable[..., None], *args: Any) -> Any:
        """Send one command with ``send(*args)`` and return its result, waited for as
        psycopg's cursor waits: without the interpreter lock, and a Ctrl-C (in the
        thread of a start) cancels the statement on the server instead of waiting for
        it. (libpq's blocking calls, as fast, could not be interrupted.) A NULL in
        ``args`` is None, which psycopg's stub of ``send_query_prepared`` leaves out."""
        send(*args)
        return self._conn.wait(results_of(self._pgconn))[-1]

    def _check(self, result: Any) -> None:
        status = result.status
        if status != _COMMAND_OK and status != _TUPLES_OK:
            self._raise(result)

    def _raise(self, result: Any) -> NoReturn:
        pgconn = self._pgconn
        if pgconn.status == _BAD:
            # The connection ended under the statement: said as psycopg says it, an
            # OperationalError (an outage, and a lost connection to the committer).
            message = pgconn.get_error_message() or result.get_error_message()
            raise errors.OperationalError(f"sending query failed: {message}")
        if result.status == _FATAL_ERROR:
            raise errors.error_from_result(result)
        raise errors.InternalError(f"unexpected result status: {ExecStatus(result.status).name}")

    def _read(self, result: Any) -> None:
        self._result = result
        self._pos = 0
        if result.status == _TUPLES_OK:
            self.rowcount = result.ntuples
            self._tx.set_pgresult(result)
        else:
            rows = result.command_tuples
            self.rowcount = rows if rows is not None else -1

    def fetchone(self) -> TupleRow | None:
        """The next row of the last result, or None."""
        result = self._result
        if result is None or result.status != _TUPLES_OK or self._pos >= result.ntuples:
            return None
        row: TupleRow = self._tx.load_row(self._pos, tuple)
        self._pos += 1
        return row

    def fetchall(self) -> list[TupleRow]:
        """The rest of the last result's rows."""
        result = self._result
        if result is None or result.status != _TUPLES_OK:
            return []
        rows: list[TupleRow] = self._tx.load_rows(self._pos, result.ntuples, tuple)
        self._pos = result.ntuples
        return rows
