"""How an app's worker behaves: ``Settings``, one keyword of ``App`` per field."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ._errors import ConfigurationError
from ._retention import Retention

#: The database used when neither ``App(url)`` nor ``PERDURE_DATABASE_URL`` names one.
DEFAULT_DATABASE_URL = "sqlite:///perdure.db"


@dataclass(frozen=True)
class Settings:
    """How an app's executor behaves; every field has a keyword of the same name on ``App``."""

    #: Recorded on every workflow this app starts; an executor only runs its own version.
    app_version: str = field(default_factory=lambda: os.environ.get("PERDURE_APP_VERSION", "1"))
    #: How long a lease lasts without a heartbeat (heartbeats come every third of it).
    lease_seconds: float = 15.0
    #: How often the executor looks for work that others started, and waiters poll.
    poll_interval: float = 0.2
    #: Threads for synchronous workflows (each running one holds one). A worker claims
    #: synchronous workflows only while fewer than this many wait for a thread: the rest
    #: stay unowned, for other workers. (128: a thread that waits costs little, and more
    #: workflows in flight share each commit; see docs/performance.md.)
    max_threads: int = 128
    #: Workflows that run at once in this process, however they were started: a workflow
    #: started here beyond it is recorded PENDING, unowned, and claimed (here or by
    #: another executor) when there is room.
    max_workflows: int = 1000
    #: How often workflows that no executor can run are reported.
    report_interval: float = 30.0
    #: Seconds that shutdown waits for running workflows before releasing them.
    shutdown_grace: float = 10.0
    #: A workflow that waits (sleep, recv, a retry's backoff, a failing probe, an open
    #: circuit breaker) longer than this is suspended: it holds no thread or memory until
    #: it wakes. Shorter waits wait in place.
    suspend_after: float = 1.0
    #: A workflow held because its replay met another step than the one recorded is tried
    #: again at once by an executor whose code for it differs (``perdure._fingerprint``), and by
    #: an executor with the same code only after this many seconds.
    hold_recheck: float = 3600.0
    #: Delete finished workflows some time after they finished (``perdure.Retention``);
    #: None keeps them forever. Applied by the app's worker, one worker at a time.
    retention: Retention | None = None

    def __post_init__(self) -> None:
        # Checked here: a wrong value would otherwise fail only in the worker's maintenance
        # thread, round after round.
        if self.retention is not None and not isinstance(self.retention, Retention):
            raise ConfigurationError(
                "retention must be a perdure.Retention (such as "
                "Retention(older_than=timedelta(days=30))) or None, not "
                f"{type(self.retention).__name__}"
            )
