"""The app that tests/test_schedules_fleet.py runs in several worker subprocesses.

Run as ``perdure worker schedule_app:app`` with ``tests/`` importable; the database comes
from ``PERDURE_DATABASE_URL``. Its schedule ticks every second; each tick's one step
appends a line to the ledger named by ``PERDURE_LEDGER`` (the tick, the workflow ID and
the PID, one ``os.write`` on an ``O_APPEND`` descriptor), so that the test can tell how
many times each tick ran, and where.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime

import perdure

app = perdure.App(poll_interval=0.05)


@app.step
def record(tick: str) -> int:
    """One ledger line for this tick; returns this process's PID."""
    line = {"tick": tick, "wf": perdure.workflow_id(), "pid": os.getpid(), "t": time.time()}
    fd = os.open(os.environ["PERDURE_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)
    return os.getpid()


@app.schedule("* * * * * *", tz="Europe/Paris")
def every_second(tick: datetime) -> str:
    """Record the tick once."""
    record(tick.isoformat())
    return tick.isoformat()
