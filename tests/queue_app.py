"""The app that tests/test_queue_fleet.py runs in worker subprocesses: one queue, "work".

Run as ``perdure worker queue_app:app`` with ``tests/`` importable. The database comes
from ``PERDURE_DATABASE_URL``; the queue's limits from ``QUEUE_LIMITS`` (JSON: the
keywords of ``perdure.Queue``, ``rate`` as ``[limit, per]``); the lease from
``QUEUE_LEASE_SECONDS``. With ``QUEUE_FAKE_HOST`` the worker says it runs on that host.

The ``hold`` step appends a "start" line when it begins and an "end" line just before
it returns to the ledger named by ``PERDURE_LEDGER`` (one JSON object per line, one
``os.write`` on an ``O_APPEND`` descriptor): the time, the workflow ID, its key, the
PID and the phase. A step's running interval lies within the time its workflow holds
a slot of the queue (claimed before the step starts, released after it returns).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import perdure

if os.environ.get("QUEUE_FAKE_HOST"):
    # Another host, as far as the other workers can tell: they cannot see that this
    # process died, so its workflows come back to them only when its leases expire.
    fake_host = os.environ["QUEUE_FAKE_HOST"]
    socket.gethostname = lambda: fake_host

QUEUE = "work"


def ledger(workflow: str, key: str, phase: str) -> None:
    entry = {"t": time.time(), "wf": workflow, "key": key, "pid": os.getpid(), "phase": phase}
    fd = os.open(os.environ["PERDURE_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def build_app(database_url: str | None = None, **limits: Any) -> perdure.App:
    """The app, its queue's limits from ``limits`` (else ``QUEUE_LIMITS``)."""
    limits = limits or json.loads(os.environ.get("QUEUE_LIMITS", "{}"))
    rate = limits.pop("rate", None)
    queue = perdure.Queue(QUEUE, rate=None if rate is None else perdure.Rate(*rate), **limits)
    app = perdure.App(
        database_url,
        queues=[queue],
        lease_seconds=float(os.environ.get("QUEUE_LEASE_SECONDS", "15")),
        poll_interval=0.05,
        max_threads=8,
        shutdown_grace=1.0,
    )

    @app.step(name="hold")
    def hold(workflow: str, key: str, seconds: float) -> int:
        ledger(workflow, key, "start")
        time.sleep(seconds)
        ledger(workflow, key, "end")
        return os.getpid()

    @app.step(name="finish")
    def finish(workflow: str) -> str:
        return workflow

    @app.workflow(name="job")
    def job(key: str, seconds: float) -> str:
        """``hold`` for ``seconds``, then a second step."""
        workflow = perdure.workflow_id()
        hold(workflow, key, seconds)
        return finish(workflow)

    return app


app = build_app()
