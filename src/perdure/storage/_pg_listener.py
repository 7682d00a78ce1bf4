"""Push events over PostgreSQL LISTEN/NOTIFY, on one connection of its own.

Writers call ``pg_notify`` inside the transaction that makes an event true (a
workflow became claimable, a workflow has its outcome); PostgreSQL delivers it at
commit to every listening connection, on any host. This thread keeps one such
connection and hands each payload to the store's callbacks. When the connection
drops it reconnects with backoff and then emits ``EVENT_RESYNC``, because events
sent meanwhile are lost: listeners look at the store again instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

from ._base import EVENT_READY, EVENT_RESYNC

log = logging.getLogger("perdure")

#: How often the thread wakes to see whether the store closed.
_TICK = 0.5


def channel_name(schema: str) -> str:
    """The NOTIFY channel of one schema (channel names have at most 63 bytes)."""
    return f"perdure_{schema}"[:63]


class Listener:
    """A daemon thread that LISTENs on ``channel`` and calls every callback per event."""

    def __init__(self, conninfo: str, channel: str, application_name: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._application_name = application_name
        self._callbacks: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._main, name=f"perdure-listener:{channel}", daemon=True
        )
        self._started = False

    def add(self, callback: Callable[[str], None]) -> None:
        """Deliver events to ``callback`` too; starts the thread on first use."""
        with self._lock:
            self._callbacks.append(callback)
            if not self._started:
                self._started = True
                self._thread.start()

    def close(self) -> None:
        """Stop listening (within a tick) and close the connection."""
        self._stop.set()
        if self._started:
            self._thread.join(timeout=5)

    def _emit(self, event: str) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("perdure event callback failed for %r", event)

    def _main(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, application_name=self._application_name
                ) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    backoff = 0.05
                    # Whatever happened while we were not listening is unknown: look again.
                    self._emit(EVENT_RESYNC)
                    self._emit(EVENT_READY)
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=_TICK):
                            self._emit(notify.payload)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                log.warning("perdure listener lost PostgreSQL (%s); reconnecting", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
