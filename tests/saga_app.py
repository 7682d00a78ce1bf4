"""The app that tests/test_saga.py runs in a worker subprocess and kills with SIGKILL.

Run as ``perdure worker saga_app:app`` with ``tests/`` importable; the database comes
from ``PERDURE_DATABASE_URL``. Every step appends a line to the ledger named by
``PERDURE_LEDGER`` (one ``os.write`` on an ``O_APPEND`` descriptor) when it starts and
when it ends, with the PID of the process running it. ``refund``, the last
compensation, does not end before the file named by ``PERDURE_GO`` exists: the test
kills the worker while it waits there, in the middle of compensating.
"""

from __future__ import annotations

import json
import os
import time

import perdure


class OutOfStock(Exception):
    """The order's items are gone: no retry helps."""


def ledger(step: str, phase: str) -> None:
    """Append one line to the ledger file (``PERDURE_LEDGER``)."""
    line = json.dumps({"step": step, "phase": phase, "pid": os.getpid(), "t": time.time()})
    fd = os.open(os.environ["PERDURE_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def build_app(database_url: str | None = None) -> perdure.App:
    """The saga app on ``database_url`` (default: ``PERDURE_DATABASE_URL``)."""
    app = perdure.App(database_url, lease_seconds=15.0, poll_interval=0.05)

    @app.step(name="authorize")
    def authorize(order: str) -> str:
        ledger("authorize", "start")
        ledger("authorize", "end")
        return f"charge-{order}"

    @app.step(name="refund")
    def refund(charge: str) -> None:
        ledger("refund", "start")
        deadline = time.monotonic() + 120
        while not os.path.exists(os.environ["PERDURE_GO"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        ledger("refund", "end")

    @app.step(name="reserve")
    def reserve(order: str) -> str:
        ledger("reserve", "start")
        ledger("reserve", "end")
        return f"hold-{order}"

    @app.step(name="release")
    def release(hold: str) -> None:
        ledger("release", "start")
        ledger("release", "end")

    @app.step(name="ship")
    def ship(order: str) -> None:
        ledger("ship", "start")
        raise OutOfStock(f"order {order}: out of stock")

    @app.workflow(name="checkout")
    def checkout(order: str) -> str:
        with perdure.saga() as saga:
            saga.compensate(refund, authorize(order))
            saga.compensate(release, reserve(order))
            ship(order)
        return "shipped"

    return app


app = build_app()
