"""Group commit: one writer thread turns many concurrent writes into few transactions.

A durable commit (an fsync) costs far more than the statements inside it, so
while one transaction commits, the writes that arrive queue up and go together
into the next one. A lone write still costs exactly one transaction; under load,
hundreds of workflows share each commit. Every future resolves only after the
transaction holding its write is committed.

A caller that finds the writer idle commits its own write in its own thread (it
becomes the leader for that moment, taking along whatever queued meanwhile): a lone
synchronous write then costs no hand-off between threads. Callers on an event loop
always queue, so that a commit never blocks their loop.

A network database can drop the writer's connection (a server restart, a network
cut). Given ``broken``, the writer then fails the writes of that batch, closes the
connection and opens a new one for the next batch (after a short backoff when
connecting fails), instead of dying with its connection. Given ``alive``, a
connection found dead before a batch starts (the server closed it while it was
idle) is replaced first, and the batch does not fail.

Given ``alone``, a batch of one write that is a single statement (``single=True``)
runs in that context instead of a transaction: on PostgreSQL the statement is sent in
autocommit, its own transaction, so a lone step record costs one round trip and no
BEGIN or COMMIT statement. A batch of several writes is still one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, Generic, TypeVar

from .._errors import StoreInDoubtError, StoreRejectedError

C = TypeVar("C")
T = TypeVar("T")

_STOP = object()


#: Seconds between reconnection attempts after a failed one: doubles up to the maximum.
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0


class _Op:
    __slots__ = ("deferred", "fn", "future", "row", "single", "then", "what")

    def __init__(
        self,
        fn: Callable[[Any], Any],
        deferred: bool = False,
        what: str | None = None,
        single: bool = False,
        row: tuple[str, Any] | None = None,
        then: Callable[[Any, bool], Any] | None = None,
    ) -> None:
        self.fn = fn
        self.deferred = deferred
        self.what = what
        self.single = single
        self.row = row
        self.then = then
        self.future: Future[Any] = Future()


#: How a driver sends several one-row writes of one statement together (fenced step
#: records and outcomes, new workflows): given the connection, the statement and the
#: parameters of each, it returns a reader per write, called once the transaction
#: committed, saying whether that write wrote its row.
SendRows = Callable[[Any, str, list[Any]], list[Callable[[], bool]]]


def _then(then: Callable[[Any, bool], Any], conn: Any, reader: Callable[[], bool]) -> Any:
    """What a write sent together returns: ``then`` of whether it wrote its row."""
    return then(conn, reader())


def _succeed(op: _Op, result: Any) -> None:
    # A caller may have cancelled its future (a cancelled coroutine awaiting it): the
    # write happened all the same, and the writer thread must not die of it. Asked
    # forgiveness, not permission: cancelled() would take the future's lock once more
    # (and contextlib.suppress costs more than this try).
    try:
        op.future.set_result(result)
    except InvalidStateError:
        return


def _fail(op: _Op, exc: BaseException) -> None:
    if op.what is not None and isinstance(exc, (StoreRejectedError, StoreInDoubtError)):
        # A refusal, or a write whose commit is in doubt, is about this write: say which
        # one (an outage is about them all).
        named = type(exc)(f"{op.what}: {exc}")
        named.__cause__ = exc.__cause__
        exc = named
    if not op.future.cancelled():
        with contextlib.suppress(InvalidStateError):
            op.future.set_exception(exc)


class GroupCommitter(Generic[C]):
    """Runs write operations on one connection in one thread, batching them.

    ``transaction(conn)`` is a context manager that opens a transaction and commits
    it on exit (rolls back on error). ``translate`` turns a driver error into the
    store's own error before it reaches a caller. ``broken(conn, exc)`` tells whether
    an error left the connection unusable; without it a connection is never replaced.
    ``alive(conn)``, a cheap local check (no round trip), tells whether a connection
    can still take the next batch. ``alone(conn)`` is the context of a batch of one
    single-statement write (see the module's docstring); without it, such a batch is a
    transaction like any other. ``rows`` sends the writes of one batch that are the same
    one-row statement (``submit_deferred(row=...)``) together (see ``SendRows``);
    without it, each is sent on its own. ``merged(statement, params)`` tells whether
    ``rows`` sends such writes as one statement, atomic by itself: a batch of nothing
    else then runs in ``alone``'s context too (one round trip, no BEGIN or COMMIT).
    """

    def __init__(
        self,
        connect: Callable[[], C],
        transaction: Callable[[C], contextlib.AbstractContextManager[Any]],
        translate: Callable[[Exception], Exception],
        *,
        name: str,
        max_batch: int = 1000,
        broken: Callable[[C, Exception], bool] | None = None,
        alive: Callable[[C], bool] | None = None,
        alone: Callable[[C], contextlib.AbstractContextManager[Any]] | None = None,
        rows: SendRows | None = None,
        merged: Callable[[str, list[Any]], bool] | None = None,
    ) -> None:
        self._connect = connect
        self._rows = rows
        self._merged = merged
        self._transaction = transaction
        self._alone = alone
        self._translate = translate
        self._broken = broken
        self._alive = alive
        self._backoff = 0.0
        self._retry_at = 0.0
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Held while a batch runs on the connection, by the writer thread or a leader.
        self._commit_lock = threading.Lock()
        self._closed = False
        self._finished = False
        self._conn: C | None = None
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        # Surface a connection failure to whoever created the store, not to the first write.
        self._ready.result()

    def submit(
        self, fn: Callable[[C], T], what: str | None = None, *, single: bool = False
    ) -> Future[T]:
        """Queue ``fn(conn)`` to run inside the next transaction; the future holds its
        return value once that transaction committed. ``what`` names the write in the
        error of a write the database refused; ``single`` as for ``submit_deferred``."""
        return self._enqueue(_Op(fn, False, what, single))

    def submit_deferred(
        self,
        fn: Callable[[C], Callable[[], T]],
        what: str | None = None,
        *,
        single: bool = False,
        row: tuple[str, Any] | None = None,
        then: Callable[[C, bool], T] | None = None,
    ) -> Future[T]:
        """Like ``submit``, for a write whose result is read only after the transaction:
        ``fn(conn)`` sends its statement and returns how to read its result, which is
        called once the transaction committed. The statements of such writes need not
        wait for each other (a driver may pipeline them into one round trip).
        ``single``: ``fn`` sends exactly one statement, which is atomic by itself, so
        alone in its batch it may run outside a transaction (see ``alone``).
        ``row``: ``fn`` is exactly this statement with these parameters, a write of one
        row whose result says whether it wrote it (``T`` is bool): writes of the same
        statement in one batch may go together (see ``rows``). ``then``: what such a write
        sent together returns instead of that bool, ``then(conn, wrote)``, called once the
        transaction committed, with the connection for a read it may need (``fn``'s own
        reader returns the same when the write goes alone)."""
        return self._enqueue(_Op(fn, True, what, single, row, then))

    def _enqueue(self, op: _Op) -> Future[Any]:
        if self._closed:
            raise RuntimeError("the store is closed")
        # Off an event loop (asyncio's None-returning get_running_loop(): on every write,
        # a RuntimeError raised and caught each time would cost more than the check),
        # and the writer idle (it is ready: __init__ waited for it).
        if asyncio._get_running_loop() is None and self._commit_lock.acquire(False):
            # Nobody is committing: lead, with whatever queued meanwhile.
            try:
                batch, stopping = self._drain(op)
                if stopping:
                    self._queue.put(_STOP)
                self._commit(batch)
            finally:
                self._commit_lock.release()
            return op.future
        self._queue.put(op)
        return op.future

    def _drain(self, first: Any) -> tuple[list[_Op], bool]:
        """``first`` and what is queued behind it, up to a batch; and whether a stop
        request was among them."""
        if first is not _STOP and self._queue.empty():
            return [first], False  # the usual lone write
        batch: list[_Op] = []
        stopping = False
        item = first
        while True:
            if item is _STOP:
                stopping = True
            else:
                batch.append(item)
            # empty() first: most batches end at an empty queue, and get_nowait() would
            # raise (and we catch) Empty each time; it still may, if the writer thread
            # took the item in between.
            if len(batch) >= self._max_batch or self._queue.empty():
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return batch, stopping

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread and close its connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def _main(self) -> None:
        try:
            self._conn = self._connect()
        except Exception as exc:
            self._ready.set_exception(self._translate(exc))
            return
        self._ready.set_result(None)
        stopping = False
        while not stopping:
            first = self._queue.get()
            with self._commit_lock:
                batch, stopping = self._drain(first)
                if batch:
                    self._commit(batch)
        with self._commit_lock:
            self._finished = True
            if self._conn is not None:
                self._close(self._conn)
                self._conn = None

    def _commit(self, batch: list[_Op]) -> None:
        """Run one batch on the connection (replacing a dead one first); the caller
        holds the commit lock."""
        if self._finished:  # a leader that raced close()
            for op in batch:
                _fail(op, RuntimeError("the store is closed"))
            return
        if self._conn is not None and self._alive is not None and not self._alive(self._conn):
            self._close(self._conn)
            self._conn = None
        conn = self._conn if self._conn is not None else self._reconnect(batch)
        if conn is not None and self._run(conn, batch) is not None:
            # The connection died under this batch: its writes failed; the next batch
            # gets a new connection.
            self._conn = None
            self._close(conn)

    @staticmethod
    def _close(conn: C) -> None:
        close = getattr(conn, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()

    def _reconnect(self, batch: list[_Op]) -> C | None:
        """A new connection for this batch, or None after failing the batch's writes."""
        delay = self._retry_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            self._conn = self._connect()
        except Exception as exc:
            self._backoff = min(max(self._backoff * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
            self._retry_at = time.monotonic() + self._backoff
            for op in batch:
                _fail(op, self._translate(exc))
            return None
        self._backoff = 0.0
        self._retry_at = 0.0
        return self._conn

    @staticmethod
    def _send(conn: C, batch: list[_Op], rows: SendRows) -> list[Any]:
        """Send the batch's writes in order, those of a statement that several one-row
        writes share together, where the first of them stands. Concurrent writes
        (one batch) commute: a write that depends on another is submitted only once that
        one committed, so no two of them are in one batch."""
        together: dict[str, list[int]] = {}
        for index, op in enumerate(batch):
            if op.row is not None:
                together.setdefault(op.row[0], []).append(index)
        if all(len(indexes) < 2 for indexes in together.values()):
            return [op.fn(conn) for op in batch]
        results: list[Any] = [None] * len(batch)
        sent = [False] * len(batch)
        for index, op in enumerate(batch):
            if sent[index]:
                continue
            indexes = together.get(op.row[0], ()) if op.row is not None else ()
            if len(indexes) < 2:
                results[index] = op.fn(conn)
                continue
            statement = op.row[0]  # type: ignore[index] # a row: it has a statement
            readers = rows(conn, statement, [batch[i].row[1] for i in indexes])  # type: ignore[index]
            for i, reader in zip(indexes, readers, strict=True):
                then = batch[i].then
                if then is not None:
                    reader = functools.partial(_then, then, conn, reader)
                results[i] = reader
                sent[i] = True
        return results

    def _one_statement(self, batch: list[_Op]) -> bool:
        """Whether the batch's writes are all one-row writes of one statement that
        ``rows`` sends as one statement (a busy writer's batch of step records)."""
        first = batch[0].row
        if self._merged is None or first is None:
            return False
        statement = first[0]
        params = []
        for op in batch:
            row = op.row
            if row is None or row[0] != statement:
                return False
            params.append(row[1])
        return self._merged(statement, params)

    def _run(self, conn: C, batch: list[_Op]) -> Exception | None:
        """Run the batch in one transaction and resolve its futures; returns the error
        that broke the connection (every write not committed then failed), else None."""
        if self._alone is not None and (
            batch[0].single if len(batch) == 1 else self._one_statement(batch)
        ):
            # One statement is its own transaction: no BEGIN or COMMIT to send. A
            # connection lost under it fails the write as the commit of a batch would
            # (the statement may have committed: the caller cannot tell, as there).
            context = self._alone(conn)
        else:
            context = self._transaction(conn)
        try:
            with context:
                # The usual lone write without a comprehension (a call of its own).
                if len(batch) == 1:
                    results = [batch[0].fn(conn)]
                elif self._rows is None:
                    results = [op.fn(conn) for op in batch]
                else:
                    results = self._send(conn, batch, self._rows)
        except Exception as exc:
            if self._broken is not None and self._broken(conn, exc):
                for op in batch:
                    _fail(op, self._translate(exc))
                return exc
            if len(batch) == 1:
                _fail(batch[0], self._translate(exc))
                return None
            # One bad write must not fail its neighbours: the transaction rolled back,
            # so give each write a transaction of its own to find the culprit.
            for index, op in enumerate(batch):
                lost = self._run(conn, [op])
                if lost is not None:
                    for rest in batch[index + 1 :]:
                        _fail(rest, self._translate(lost))
                    return lost
            return None
        for op, result in zip(batch, results, strict=True):
            if not op.deferred:
                _succeed(op, result)
                continue
            try:
                _succeed(op, result())
            except Exception as exc:
                _fail(op, self._translate(exc))
        return None
