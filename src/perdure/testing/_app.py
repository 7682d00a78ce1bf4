"""``TestApp``: an app on a temporary database whose time is virtual and skips ahead.

``with TestApp() as app:`` runs workflows in this process on a fresh SQLite file (or on
the database a URL names), with a ``VirtualClock``: a workflow that sleeps for a week
finishes in milliseconds, ``perdure.now()`` in it reads the virtual time, and retry
backoffs, ``recv`` timeouts, deadlines, schedules' ticks, delayed starts and queues'
rates fire as soon as nothing else can run (``TimeSkipper``); ``skip_until`` lets time
skip up to a given time and holds it there. Every wait suspends the workflow
(``suspend_after=0``), so that a wait is a wake time in the database, never a thread
sleeping in real time.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from .._app import App
from .._errors import ConfigurationError
from .._serialization import Serializer
from ._clock import VirtualClock, as_timestamp
from ._skipping import TimeSkipper

#: Settings a ``TestApp`` uses unless given: a lease of a day of virtual time (a skip
#: of hours must not make the executor's own leases lapse), quick polls, a short grace.
TEST_DEFAULTS: dict[str, Any] = {
    "lease_seconds": 86400.0,
    "poll_interval": 0.02,
    "shutdown_grace": 2.0,
    "report_interval": 3600.0,
}


class TestApp(App):
    """An ``App`` for tests: a temporary database, a virtual clock, time skipping.

    ``database_url`` None (the default) means a fresh SQLite file in a temporary
    folder, deleted by ``close()`` (which ``with TestApp() as app:`` calls at its end);
    a URL (e.g. a PostgreSQL schema of a test server) is used as given and left as it
    is. ``PERDURE_DATABASE_URL`` is never read: a test must not reach a real database
    by accident. ``start`` is the virtual clock's first time (default: now).
    ``time_skipping=False`` leaves the clock alone: move it with ``app.clock.advance()``
    or ``app.skip()``. Other keywords are ``App`` settings; ``suspend_after`` is always
    0 (a wait in place would wait in real time).
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name
    clock: VirtualClock

    def __init__(
        self,
        database_url: str | None = None,
        *,
        start: float | datetime | None = None,
        time_skipping: bool = True,
        serializer: Serializer | None = None,
        **settings: Any,
    ) -> None:
        if settings.get("suspend_after", 0.0) != 0.0:
            raise ConfigurationError(
                "a TestApp suspends every wait (suspend_after=0): a wait in place would "
                "wait in real time while its virtual clock stands still"
            )
        self._folder: str | None = None
        if database_url is None:
            self._folder = tempfile.mkdtemp(prefix="perdure-test-")
            database_url = f"sqlite:///{self._folder}/perdure.db"
        options = {**TEST_DEFAULTS, **settings, "suspend_after": 0.0}
        super().__init__(database_url, serializer=serializer, clock=VirtualClock(start), **options)
        self.time_skipping = time_skipping
        self._skipper: TimeSkipper | None = None
        self._hold: float | None = None

    @property
    def skipper(self) -> TimeSkipper:
        """What moves the clock while the app is launched (a new one per launch)."""
        if self._skipper is None:
            self._skipper = TimeSkipper(self, self.clock, auto=self.time_skipping, hold=self._hold)
        return self._skipper

    def launch(self, regions: Sequence[str] | None = None) -> App:
        """Start the executor and time skipping; idempotent. A test app has one database
        (``regions`` is refused)."""
        if regions is not None:
            raise ConfigurationError("a TestApp has one database: launch it without regions")
        super().launch()
        self.skipper.start()
        return self

    def shutdown(self, grace: float | None = None) -> None:
        """Stop time skipping and the executor (the database stays until ``close``)."""
        skipper, self._skipper = self._skipper, None
        if skipper is not None:
            skipper.stop()
        super().shutdown(grace)

    def close(self) -> None:
        """Shut down and delete the temporary database (if the app made one)."""
        self.shutdown(grace=0.5)
        folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> TestApp:
        self.launch()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def skip(self, timeout: float = 5.0) -> float | None:
        """Move the clock to the next time a workflow becomes due, once nothing can run
        (waiting up to ``timeout`` real seconds for that); returns the new time, or None
        when something still runs or nothing will ever be due. (Time skipping does this
        by itself.)"""
        deadline = time.monotonic() + timeout
        while True:
            moved = self.skipper.skip()
            if moved is not None or time.monotonic() >= deadline:
                return moved
            time.sleep(0.005)

    def hold(self, when: float | datetime | None) -> None:
        """Let time skipping move the clock up to ``when`` (a timestamp, or a datetime,
        naive meaning UTC) and no further, across launches, until another ``hold`` or
        ``skip_until``; None lifts the bound. (``app.clock`` still moves as told.)"""
        self._hold = None if when is None else as_timestamp(when)
        if self._skipper is not None:
            self._skipper.hold = self._hold

    def skip_until(self, when: float | datetime | timedelta, timeout: float = 30.0) -> float:
        """Skip time up to ``when`` (a timestamp, a datetime, or a ``timedelta`` from
        now) and no further: whatever becomes due on the way runs at its time, in order
        (each schedule's tick, each wake-up, each queue's turn), and so does what is due
        at ``when``. Returns the clock's time once it reached ``when`` and nothing can
        run; ``TimeoutError`` after ``timeout`` real seconds. The clock then stays held
        at ``when`` (see ``hold``): a schedule does not run the clock on while the test
        looks; ``hold(None)`` or a later ``skip_until`` lets it go on."""
        if isinstance(when, timedelta):
            when = self.clock.time() + when.total_seconds()
        self.hold(when)
        target = as_timestamp(when)
        deadline = time.monotonic() + timeout
        while True:
            if not self.time_skipping:
                self.skipper.skip()
            if self.clock.time() >= target and self.idle():
                return self.clock.time()
            if time.monotonic() >= deadline:
                until = datetime.fromtimestamp(target, timezone.utc).isoformat()
                raise TimeoutError(
                    f"skip_until({until}): the clock is at "
                    f"{self.clock.datetime().isoformat()} after {timeout:g} s of real time, "
                    "and something still runs or is due (a step that takes real time? a "
                    "workflow that never waits?)"
                )
            time.sleep(0.005)

    def idle(self) -> bool:
        """Whether nothing can run now: no run, start or claim here, and no workflow due."""
        return self.skipper.idle()
