"""Group commit: one writer thread turns many concurrent writes into few transactions.

A durable commit (an fsync) costs far more than the statements inside it, so
while one transaction commits, the writes that arrive queue up and go together
into the next one. A lone write still costs exactly one transaction; under load,
hundreds of workflows share each commit. Every future resolves only after the
transaction holding its write is committed.

A caller that finds the writer idle and nothing queued commits its own write in its
own thread (it becomes the leader for that moment): a lone synchronous write then costs
no hand-off between threads. Callers on an event loop always queue, so that a commit
never blocks their loop. Queued writes commit in the order they were queued.

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
import collections
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

#: The threads whose writes always queue for the writer thread (see ``queue_only``).
_QUEUE_ONLY: set[int] = set()


def queue_only() -> None:
    """From now on, this thread's writes always queue for the writer thread, never
    leading a commit of their own: a thread that hands on many writes at once (the
    engine's holder of step records) would otherwise commit them one by one."""
    _QUEUE_ONLY.add(threading.get_ident())


#: Seconds between reconnection attempts after a failed one: doubles up to the maximum.
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0


class Write:
    """One write for the committer: ``fn`` and how it may go (see ``submit_deferred``).
    ``grouped``, ``place``: the number of writes submitted together with it
    (``submit_together``; 0 if none) and its place among them (they stand side by side in
    a batch: counts, not references, so that no write and its group make a cycle for the
    garbage collector); ``alone``, on the first of a group: the ``fn`` of a deferred write
    of one statement that does what the group does, sent when the group is a batch by
    itself."""

    __slots__ = (
        "alone",
        "deferred",
        "fn",
        "future",
        "grouped",
        "place",
        "row",
        "single",
        "then",
        "what",
    )

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
        self.grouped = 0
        self.place = 0
        self.alone: Callable[[Any], Callable[[], Any]] | None = None


#: How a driver sends several one-row writes of one statement together (fenced step
#: records and outcomes, new workflows): given the connection, the statement and the
#: parameters of each, it returns a reader per write, called once the transaction
#: committed, saying whether that write wrote its row.
SendRows = Callable[[Any, str, list[Any]], list[Callable[[], bool]]]
#: How a driver sends the one-row writes of a whole batch as one statement: given the
#: connection, it sends it and returns a reader per write, as ``SendRows`` does.
OneStatement = Callable[[Any], list[Callable[[], bool]]]


def _then(then: Callable[[Any, bool], Any], conn: Any, reader: Callable[[], bool]) -> Any:
    """What a write sent together returns: ``then`` of whether it wrote its row."""
    return then(conn, reader())


def _read_after(
    writes: list[Write], conn: Any, readers: list[Callable[[], bool]]
) -> list[Callable[[], Any]]:
    """The results of writes sent together: each one's reader, or ``then`` of it."""
    return [
        reader if op.then is None else functools.partial(_then, op.then, conn, reader)
        for op, reader in zip(writes, readers, strict=True)
    ]


def _succeed(op: Write, result: Any) -> None:
    # A caller may have cancelled its future (a cancelled coroutine awaiting it): the
    # write happened all the same, and the writer thread must not die of it. Asked
    # forgiveness, not permission: cancelled() would take the future's lock once more
    # (and contextlib.suppress costs more than this try).
    try:
        op.future.set_result(result)
    except InvalidStateError:
        return


def _fail(op: Write, exc: BaseException) -> None:
    if op.what is not None and isinstance(exc, (StoreRejectedError, StoreInDoubtError)):
        # A refusal, or a write whose commit is in doubt, is about this write: say which
        # one (an outage is about them all).
        named = type(exc)(f"{op.what}: {exc}")
        named.__cause__ = exc.__cause__
        exc = named
    if not op.future.cancelled():
        with contextlib.suppress(InvalidStateError):
            op.future.set_exception(exc)


def _in_group_order(batch: list[Write], units: list[list[int]]) -> list[list[int]]:
    """``units`` (in the order of their last writes) reordered, if they must be, so
    that the writes of each group go in the group's order: a shared statement holding
    later writes of a group goes after those holding earlier ones (a step record before
    the outcome that drops the lease it is fenced by). Each write one by one, in the
    batch's order, if no such order exists."""
    if _group_order_holds(batch, units):
        return units  # the usual case: no outcome after the batch's last step record
    rank = [op.place for op in batch]
    ordered = sorted(units, key=lambda unit: max(rank[i] for i in unit))  # stable
    if _group_order_holds(batch, ordered):
        return ordered
    return [[index] for index in range(len(batch))]


def _group_order_holds(batch: list[Write], units: list[list[int]]) -> bool:
    """Whether sending ``units`` in this order sends each group's writes in order (a
    group's writes stand side by side in its batch: they were queued as one item)."""
    place = [0] * len(batch)
    for number, unit in enumerate(units):
        for index in unit:
            place[index] = number
    for index, op in enumerate(batch):
        if op.grouped and not op.place:
            places = place[index : index + op.grouped]
            if places != sorted(places):
                return False
    return True


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
    without it, each is sent on its own. ``as_one(rows)``, given the ``row`` of each
    write of a batch of only such writes, returns how to send them as one statement,
    atomic by itself, if it can (see ``OneStatement``): the batch then runs in
    ``alone``'s context too (one round trip, no BEGIN or COMMIT).
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
        as_one: Callable[[list[tuple[str, Any]]], OneStatement | None] | None = None,
    ) -> None:
        self._connect = connect
        self._rows = rows
        self._as_one = as_one
        self._transaction = transaction
        self._alone = alone
        self._translate = translate
        self._broken = broken
        self._alive = alive
        self._backoff = 0.0
        self._retry_at = 0.0
        self._max_batch = max_batch
        # The writes waiting, oldest first: only the writer thread takes them, under the
        # commit lock, so that batches commit them in the order they were queued.
        self._queued: collections.deque[Any] = collections.deque()
        # A token per write queued, on which the writer thread sleeps: it takes writes
        # from ``_queued`` only under the lock, never holding one while it waits for it.
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
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
        write = Write(fn, False, what, single)
        self._enqueue(write)
        return write.future

    def submit_write(self, write: Write) -> Future[Any]:
        """Queue ``write`` (as ``submit`` or ``submit_deferred`` would make it)."""
        self._enqueue(write)
        return write.future

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
        write = Write(fn, True, what, single, row, then)
        self._enqueue(write)
        return write.future

    def submit_together(
        self, writes: list[Write], alone: Callable[[C], Callable[[], Any]] | None = None
    ) -> list[Future[Any]]:
        """Queue ``writes`` (made as ``submit`` and ``submit_deferred`` make theirs) to
        go in one transaction, all or none: always in the same batch, and tried again
        as one when a batch fails (see ``_run``). ``alone``: as the ``fn`` of a deferred
        write (``submit_deferred``), one statement that does what they do, sent instead
        when they are a batch by themselves (in ``alone``'s context: one round trip);
        its result is each one's. Returns their futures, in order."""
        group = tuple(writes)
        for place, write in enumerate(group):
            write.grouped, write.place = len(group), place
        group[0].alone = alone
        self._enqueue(group)
        return [write.future for write in group]

    def _enqueue(self, item: Write | tuple[Write, ...]) -> None:
        if self._closed:
            raise RuntimeError("the store is closed")
        # Off an event loop (asyncio's None-returning get_running_loop(): on every write,
        # a RuntimeError raised and caught each time would cost more than the check),
        # not a thread that must only queue, and the writer idle (it is ready: __init__
        # waited for it) with nothing queued.
        if (
            asyncio._get_running_loop() is None
            and threading.get_ident() not in _QUEUE_ONLY
            and self._commit_lock.acquire(False)
        ):
            # Nobody is committing. Lead if nothing waits either: writes queued before
            # this one go first, and only the writer thread takes them (see ``_drain``).
            if not self._queued:
                try:
                    self._commit([item] if isinstance(item, Write) else list(item))
                finally:
                    self._commit_lock.release()
                return
            self._commit_lock.release()
        self._queued.append(item)
        self._wake.put(None)

    def _drain(self) -> tuple[list[Write], bool]:
        """What is queued, oldest first, up to a batch (a group of writes submitted
        together counts as one); and whether a stop request was among them.

        Only the writer thread takes queued writes, oldest first, under the commit lock;
        a leader commits its own write only when none is queued: so writes commit in the
        order they were queued, those of one thread in the order it made them. (When
        the writer thread took a write off the queue before the lock and leaders took
        along what was queued, a leader could commit the writes queued after that one
        first: an async run's step records were listed, and copied by a fork, out of the
        order it wrote them.)"""
        queued = self._queued
        batch: list[Write] = []
        stopping = False
        while queued and len(batch) < self._max_batch:
            item = queued.popleft()
            if item is _STOP:
                stopping = True
            elif type(item) is Write:
                batch.append(item)
            else:
                batch.extend(item)
        return batch, stopping

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread and close its connection."""
        if self._closed:
            return
        self._closed = True
        self._queued.append(_STOP)
        self._wake.put(None)
        self._thread.join()

    def _main(self) -> None:
        try:
            self._conn = self._connect()
        except Exception as exc:
            self._ready.set_exception(self._translate(exc))
            return
        self._ready.set_result(None)
        stopping = False
        wake = self._wake
        while not stopping:
            if not self._queued:
                wake.get()
                # The tokens of writes an earlier batch took along are spent here at once
                # (each token's write was queued before it: it is queued still, or done).
                while not wake.empty():
                    wake.get_nowait()
            with self._commit_lock:
                batch, stopping = self._drain()
                if batch:
                    self._commit(batch)
        with self._commit_lock:
            self._finished = True
            if self._conn is not None:
                self._close(self._conn)
                self._conn = None

    def _commit(self, batch: list[Write]) -> None:
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
        if conn is None:
            return
        first = batch[0]
        if first.alone is not None and len(batch) == first.grouped:
            lost = self._run_as_one(conn, batch, first.alone)  # a group by itself
        else:
            lost = self._run(conn, batch)
        if lost is not None:
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

    def _reconnect(self, batch: list[Write]) -> C | None:
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

    def _run_as_one(
        self, conn: C, group: list[Write], fn: Callable[[Any], Callable[[], Any]]
    ) -> Exception | None:
        """Run a group alone in its batch as its one statement (``fn``); each of its
        writes gets that statement's result (or failure)."""
        alone = Write(fn, True, group[-1].what, single=True)
        lost = self._run(conn, [alone])
        error = alone.future.exception()  # resolved: _run settles every future
        for write in group:
            with contextlib.suppress(InvalidStateError):
                if error is None:
                    write.future.set_result(alone.future.result())
                else:
                    write.future.set_exception(error)
        return lost

    @staticmethod
    def _send(conn: C, batch: list[Write], rows: SendRows) -> list[Any]:
        """Send the batch's writes in order, those of a statement that several one-row
        writes share together, where the last of them stands. Concurrent writes
        (one batch) commute: a write that depends on another is submitted only once that
        one committed, so no two of them are in one batch, except a group submitted
        together, whose writes go in their order (see ``_in_group_order``).

        Where the last stands, not the first: a run's side effect (a barrier, such as
        ``set_event``, which may record a step with a statement of its own) goes out only
        once the run's earlier writes committed, but the run's next step record may follow
        it at once, into the same batch; sent where the batch's first step record stood
        (another workflow's, queued before the side effect), that record was written, and
        listed, before the side effect's own record."""
        together: dict[str, list[int]] = {}
        grouped = False
        for index, op in enumerate(batch):
            if op.row is not None:
                together.setdefault(op.row[0], []).append(index)
            if op.grouped:
                grouped = True
        if all(len(indexes) < 2 for indexes in together.values()):
            return [op.fn(conn) for op in batch]
        # What goes as one: the writes of a shared statement, or a write alone.
        units: list[list[int]] = []
        for index, op in enumerate(batch):
            indexes = together.get(op.row[0], ()) if op.row is not None else ()
            if len(indexes) < 2:
                units.append([index])
            elif indexes[-1] == index:
                units.append(indexes)
        if grouped:
            units = _in_group_order(batch, units)
        results: list[Any] = [None] * len(batch)
        for unit in units:
            if len(unit) == 1:
                results[unit[0]] = batch[unit[0]].fn(conn)
                continue
            statement = batch[unit[0]].row[0]  # type: ignore[index] # a row: it has one
            readers = rows(conn, statement, [batch[i].row[1] for i in unit])  # type: ignore[index]
            read = _read_after([batch[i] for i in unit], conn, readers)
            for i, reader in zip(unit, read, strict=True):
                results[i] = reader
        return results

    def _one_statement(self, batch: list[Write]) -> OneStatement | None:
        """How to send the batch as one statement (a busy writer's batch of step records
        and outcomes), if its writes are all one-row writes that ``as_one`` can join."""
        if self._as_one is None:
            return None
        rows = []
        for op in batch:
            if op.row is None:
                return None
            rows.append(op.row)
        return self._as_one(rows)

    def _run(self, conn: C, batch: list[Write], unit: bool = False) -> Exception | None:
        """Run the batch in one transaction and resolve its futures; returns the error
        that broke the connection (every write not committed then failed), else None.
        ``unit``: the batch is one write or one group, which fails as a whole."""
        one = None if len(batch) == 1 else self._one_statement(batch)
        if self._alone is not None and (batch[0].single if len(batch) == 1 else one is not None):
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
                elif one is not None:
                    results = _read_after(batch, conn, one(conn))
                elif self._rows is None:
                    results = [op.fn(conn) for op in batch]
                else:
                    results = self._send(conn, batch, self._rows)
        except Exception as exc:
            if self._broken is not None and self._broken(conn, exc):
                for op in batch:
                    _fail(op, self._translate(exc))
                return exc
            if len(batch) == 1 or unit:
                for op in batch:
                    _fail(op, self._translate(exc))
                return None
            # One bad write must not fail its neighbours: the transaction rolled back,
            # so give each write (each group submitted together) a transaction of its
            # own to find the culprit.
            for index, op in enumerate(batch):
                if op.place:
                    continue  # tried with the first of its group
                lost = self._run(conn, batch[index : index + (op.grouped or 1)], unit=True)
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
