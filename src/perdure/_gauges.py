"""What perdure's observable gauges read from a store: suspended workflows and circuit
breakers, read at most every ``TTL`` seconds however often a metric reader collects
(a Prometheus scrape, a periodic exporter), so that metrics never load the database.

A ``StoreGauges`` is registered with ``_telemetry.watch`` by an executor while it runs
and by the HTTP API (``perdure.web``); the gauges sum the distinct databases watched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ._errors import PerdureError
from .storage import Store

log = logging.getLogger("perdure")

#: Seconds a reading is reused.
TTL = 5.0


class StoreGauges:
    """The gauges' readings of one store (``_telemetry.GaugeSource``). ``store`` returns
    it while it is open, None otherwise: the gauges never open a database."""

    def __init__(
        self,
        key: str,
        store: Callable[[], Store | None],
        now: Callable[[], float],
        ttl: float = TTL,
    ) -> None:
        self._key = key
        self._store = store
        self._now = now
        self._ttl = ttl
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._suspended: dict[str, int] = {}
        self._breakers: list[tuple[str, str]] = []

    @property
    def key(self) -> str:
        """The database (its URL): two sources of the same database are counted once."""
        return self._key

    def reading(self) -> tuple[dict[str, int], list[tuple[str, str]]] | None:
        """(suspended workflows by name, (name, state) of each stored breaker), read at
        most every ``ttl`` seconds; None while the store is not open."""
        with self._lock:
            if time.monotonic() - self._read_at >= self._ttl:
                store = self._store()
                if store is None:  # not used yet, or shut down: never opened from here
                    return None
                self._read_at = time.monotonic()
                try:
                    self._suspended = store.count_suspended(self._now())
                    self._breakers = [(b.name, b.state) for b in store.list_breakers()]
                except PerdureError as exc:
                    # A scrape during an outage reports nothing rather than stale numbers.
                    log.debug("metrics: could not read the store: %s", exc)
                    self._suspended, self._breakers = {}, []
            return dict(self._suspended), list(self._breakers)
