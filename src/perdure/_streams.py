"""Reading a workflow's stream from outside it: ``app.read_stream``.

A ``Stream`` replays the stream from an offset and then follows it live, until the
stream is closed (``perdure.close_stream``) or the workflow has ended and every value
it wrote is read. Iterate it with ``for`` in plain code, with ``async for`` in a
coroutine (the store is read in a worker thread, and the wait holds no thread): one
object, both ways. Each value comes once, in offset order; a reader that stops and comes
back with ``start=`` the next offset (an SSE client's ``Last-Event-ID``) misses nothing
and sees nothing twice.

It waits between looks on this process's notifier: a write made here, or pushed by
PostgreSQL's NOTIFY from any process, wakes it at once; otherwise it looks again every
``wait_interval``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from typing import Any, Protocol

from ._errors import WorkflowNotFoundError
from ._model import TERMINAL_STATES, StreamEntry
from ._notifier import Notifier
from ._serialization import Serializer, decode_value
from ._validation import check_key, check_workflow_id
from .storage import EVENT_STREAM, Store

#: Entries read per look at the store.
PAGE = 1000


class StreamHost(Protocol):
    """What a stream's reader needs of the app."""

    @property
    def store(self) -> Store: ...

    @property
    def serializer(self) -> Serializer: ...

    @property
    def notifier(self) -> Notifier: ...

    @property
    def wait_interval(self) -> float: ...

    @property
    def executor_id(self) -> str | None:
        """The ID of this process's executor, None without one."""
        ...

    def owned_here(self, owner: str | None) -> bool:
        """Whether ``owner`` (a workflow's lease holder) is this process's executor."""
        ...


class Stream:
    """The values of a workflow's stream ``key`` from offset ``start`` on: ``for value in
    stream`` or ``async for value in stream`` (see the module). ``entries()`` gives the
    stored entries instead, each with its offset."""

    def __init__(self, app: StreamHost, workflow_id: str, key: str, start: int = 0) -> None:
        self.workflow_id = check_workflow_id(workflow_id)
        self.key = check_key("stream key", key)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be an offset (an int >= 0), not {start!r}")
        self.start = start
        #: Once an iteration ended: whether the stream was closed (else the workflow ended).
        self.closed = False
        self._app = app

    def __repr__(self) -> str:
        return f"Stream({self.workflow_id!r}, {self.key!r}, start={self.start})"

    def value(self, entry: StreamEntry) -> Any:
        """The value an entry holds, decoded by the app's serializer."""
        what = f"the value at offset {entry.offset} of stream {self.key!r} of {self.workflow_id!r}"
        return decode_value(self._app.serializer, entry.value or "null", Any, what)

    def __iter__(self) -> Iterator[Any]:
        for entry in self.entries():
            yield self.value(entry)

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for entry in self.entries():
            yield self.value(entry)

    def entries(self) -> _Entries:
        """The entries (offset, stored value, writer), iterable both ways; the close marker
        is not among them."""
        return _Entries(self)

    # -- one look at the store -----------------------------------------------------------

    def _look(self, offset: int, first: bool) -> tuple[list[StreamEntry], bool]:
        """The entries from ``offset`` on, and whether the stream ended (closed, or the
        workflow ended and all it wrote is read)."""
        store = self._app.store
        # The status first: entries written before the workflow ended are committed by
        # then, so an ended workflow's read below sees all of them.
        record = store.get_workflow(self.workflow_id)
        if (
            first
            and record is not None
            and record.status not in TERMINAL_STATES
            and not self._app.owned_here(record.owner)
        ):
            # Its end (which ends the stream) pushed here too: see Store.watch_workflows.
            record = store.watch_workflows([self.workflow_id], self._app.executor_id).get(
                self.workflow_id
            )
        if record is None:
            if first:
                raise WorkflowNotFoundError(self.workflow_id)
            return [], True
        entries = store.read_stream(self.workflow_id, self.key, offset, PAGE)
        for index, entry in enumerate(entries):
            if entry.closes:
                self.closed = True
                return entries[:index], True
        full = len(entries) == PAGE
        return entries, record.status in TERMINAL_STATES and not full

    def _subscribe(self) -> list[Future[Any]]:
        notifier = self._app.notifier
        # Subscribed before looking, so that a write in between is not missed.
        return [
            notifier.subscribe(EVENT_STREAM + self.workflow_id),
            notifier.subscribe(self.workflow_id),  # it ended in this process
        ]

    def _unsubscribe(self, waiters: list[Future[Any]]) -> None:
        notifier = self._app.notifier
        notifier.unsubscribe(EVENT_STREAM + self.workflow_id, waiters[0])
        notifier.unsubscribe(self.workflow_id, waiters[1])

    def _follow(self) -> Iterator[StreamEntry]:
        offset, first = self.start, True
        while True:
            waiters = self._subscribe()
            try:
                entries, ended = self._look(offset, first)
                first = False
                for entry in entries:
                    offset = entry.offset + 1
                    yield entry
                if ended:
                    return
                if not entries:
                    concurrent.futures.wait(
                        waiters,
                        timeout=self._app.wait_interval,
                        return_when=concurrent.futures.FIRST_COMPLETED,
                    )
            finally:
                self._unsubscribe(waiters)

    async def _follow_async(self) -> AsyncIterator[StreamEntry]:
        offset, first = self.start, True
        while True:
            waiters = self._subscribe()
            wrapped = [asyncio.wrap_future(waiter) for waiter in waiters]
            try:
                entries, ended = await asyncio.to_thread(self._look, offset, first)
                first = False
                for entry in entries:
                    offset = entry.offset + 1
                    yield entry
                if ended:
                    return
                if not entries:
                    await asyncio.wait(
                        wrapped,
                        timeout=self._app.wait_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
            finally:
                self._unsubscribe(waiters)
                for future in wrapped:
                    future.cancel()


class _Entries:
    """A stream's entries, iterable with ``for`` and with ``async for``."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[StreamEntry]:
        return self._stream._follow()

    def __aiter__(self) -> AsyncIterator[StreamEntry]:
        return self._stream._follow_async()


def read_stream(app: StreamHost, workflow_id: str, key: str, start: int = 0) -> Stream:
    """The values the workflow writes to its stream ``key`` (``perdure.write_stream``),
    in order, from offset ``start`` (0: the first): ``for value in app.read_stream(...)``
    or ``async for value in app.read_stream(...)``. It replays what is stored, then
    follows live until the stream is closed or the workflow ends. Each value comes once;
    values written from inside a step are at least once (see ``perdure.write_stream``).
    Raises ``WorkflowNotFoundError`` at the first look when no workflow has this ID."""
    return Stream(app, workflow_id, key, start)
