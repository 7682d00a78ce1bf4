"""``perdure.testing``: test workflows fast, with crashes, and against recorded histories.

- ``TestApp``: an app on a temporary database with a ``VirtualClock`` that skips to the
  next timer as soon as nothing else can run (a week of sleep in milliseconds).
- ``crash_points`` and ``assert_survives_crashes``: run a workflow once per crash point
  (after each step and each wait), crashing its executor there and recovering it as
  another worker would; the outcome must be the uninterrupted run's, and no step that
  completed runs again.
- ``history`` and ``replay``: export a workflow's history, and run the current code
  against it (a change that would hold in-flight workflows fails the test).
- A pytest plugin (``perdure.testing.plugin``, registered as ``perdure``) with fixtures
  for the above: ``perdure_app``, ``perdure_clock``, ``perdure_database_url``.

See docs/testing.md.
"""

from ._app import TestApp
from ._clock import VirtualClock
from ._crash import CrashPoint, assert_survives_crashes, crash_points
from ._replay import FORMAT, ReplayResult, history, replay
from ._skipping import TimeSkipper, time_skipping

__all__ = [
    "FORMAT",
    "CrashPoint",
    "ReplayResult",
    "TestApp",
    "TimeSkipper",
    "VirtualClock",
    "assert_survives_crashes",
    "crash_points",
    "history",
    "replay",
    "time_skipping",
]
