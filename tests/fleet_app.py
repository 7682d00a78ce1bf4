"""The app that tests/test_fleet.py runs in several worker subprocesses on PostgreSQL.

Run as ``perdure worker fleet_app:app`` with ``tests/`` importable. The database comes
from ``PERDURE_DATABASE_URL``; the executor's settings from ``FLEET_LEASE_SECONDS``,
``FLEET_MAX_THREADS``, ``FLEET_MAX_WORKFLOWS``, ``FLEET_SHUTDOWN_GRACE`` and
``FLEET_POLL_INTERVAL`` (defaults below), so that a test can make leases short.

Like ``crash_app``, every step appends a "start" line when it begins and an "end" line
just before it returns to the ledger named by ``PERDURE_LEDGER`` (one JSON object per
line, one ``os.write`` on an ``O_APPEND`` descriptor): the time, the workflow ID, the
step name, the PID and the phase. The test process writes its own lines there too
(``"event"``: a kill, a pause, a resume), so that the ledger orders them with the steps.

Every step also returns the PID of the process that ran it, inside its result: the
recorded output of a step tells which process recorded it. The workflows' results leave
the PIDs out, so that they do not depend on who ran what.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import perdure

#: The steps of a checkout, in order.
CHECKOUT_STEPS = ("order_intake", "authorize_payment", "update_inventory", "confirm_order")
#: Seconds a checkout step takes, drawn uniformly (``hold=None``).
STEP_SECONDS = (0.005, 0.030)

LEASE_SECONDS = float(os.environ.get("FLEET_LEASE_SECONDS", "3"))
MAX_THREADS = int(os.environ.get("FLEET_MAX_THREADS", "8"))
MAX_WORKFLOWS = int(os.environ.get("FLEET_MAX_WORKFLOWS", str(MAX_THREADS)))
SHUTDOWN_GRACE = float(os.environ.get("FLEET_SHUTDOWN_GRACE", "5"))
POLL_INTERVAL = float(os.environ.get("FLEET_POLL_INTERVAL", "0.05"))


def ledger_write(entry: dict[str, Any]) -> None:
    """Append one JSON line to the ledger file (``PERDURE_LEDGER``)."""
    fd = os.open(os.environ["PERDURE_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def ledger(workflow: str, step: str, phase: str) -> None:
    """A step's ledger line; same format as ``crash_app.ledger``."""
    ledger_write(
        {"t": time.time(), "wf": workflow, "step": step, "pid": os.getpid(), "phase": phase}
    )


def work(workflow: str, step: str, hold: float | None) -> int:
    """The body every step shares: ledger start, ``hold`` seconds of "work" (random
    within ``STEP_SECONDS`` if None), ledger end; returns this process's PID."""
    ledger(workflow, step, "start")
    time.sleep(random.uniform(*STEP_SECONDS) if hold is None else hold)
    ledger(workflow, step, "end")
    return os.getpid()


def order_number(order_id: str) -> int:
    """``order-17`` -> 17."""
    return int(order_id.rsplit("-", 1)[1])


def expected_checkout(order_id: str) -> dict[str, Any]:
    """What ``checkout(order_id)`` returns; computed here without any step."""
    items = order_number(order_id) % 5 + 1
    amount = items * 250
    authorization = f"auth-{order_id}-{amount}"
    return {
        "order_id": order_id,
        "items": items,
        "amount": amount,
        "authorization": authorization,
        "reserved": items,
        "stock_left": 1000 - items,
        "confirmation": f"conf-{order_id}-{authorization}-{items}",
    }


def build_app(database_url: str | None = None, **settings: Any) -> perdure.App:
    """An app with the ``checkout`` and ``ping`` workflows on ``database_url`` (default:
    ``PERDURE_DATABASE_URL``); ``settings`` override the ``FLEET_*`` ones."""
    options: dict[str, Any] = {
        "lease_seconds": LEASE_SECONDS,
        "max_threads": MAX_THREADS,
        "max_workflows": MAX_WORKFLOWS,
        "shutdown_grace": SHUTDOWN_GRACE,
        "poll_interval": POLL_INTERVAL,
        **settings,
    }
    app = perdure.App(database_url, **options)

    @app.step(name="order_intake")
    def order_intake(workflow: str, order_id: str, hold: float | None) -> dict[str, Any]:
        pid = work(workflow, "order_intake", hold)
        return {"order_id": order_id, "items": order_number(order_id) % 5 + 1, "pid": pid}

    @app.step(name="authorize_payment")
    def authorize_payment(
        workflow: str, order_id: str, amount: int, hold: float | None
    ) -> dict[str, Any]:
        pid = work(workflow, "authorize_payment", hold)
        return {"authorization": f"auth-{order_id}-{amount}", "amount": amount, "pid": pid}

    @app.step(name="update_inventory")
    def update_inventory(
        workflow: str, order_id: str, items: int, hold: float | None
    ) -> dict[str, Any]:
        pid = work(workflow, "update_inventory", hold)
        return {"reserved": items, "stock_left": 1000 - items, "pid": pid}

    @app.step(name="confirm_order")
    def confirm_order(
        workflow: str, order_id: str, authorization: str, reserved: int, hold: float | None
    ) -> dict[str, Any]:
        pid = work(workflow, "confirm_order", hold)
        return {"confirmation": f"conf-{order_id}-{authorization}-{reserved}", "pid": pid}

    @app.workflow(name="checkout")
    def checkout(order_id: str, hold: float | None = None) -> dict[str, Any]:
        """Four steps of ``hold`` seconds each (a few milliseconds if None)."""
        workflow = perdure.workflow_id()
        intake = order_intake(workflow, order_id, hold)
        payment = authorize_payment(workflow, order_id, intake["items"] * 250, hold)
        stock = update_inventory(workflow, order_id, intake["items"], hold)
        confirmation = confirm_order(
            workflow, order_id, payment["authorization"], stock["reserved"], hold
        )
        return {
            "order_id": intake["order_id"],
            "items": intake["items"],
            "amount": payment["amount"],
            "authorization": payment["authorization"],
            "reserved": stock["reserved"],
            "stock_left": stock["stock_left"],
            "confirmation": confirmation["confirmation"],
        }

    @app.step(name="pong")
    def pong(workflow: str, n: int, hold: float) -> dict[str, Any]:
        pid = work(workflow, "pong", hold)
        return {"n": n, "pid": pid}

    @app.workflow(name="ping")
    def ping(n: int, hold: float = 0.0) -> int:
        """One step of ``hold`` seconds; returns ``n``."""
        return int(pong(perdure.workflow_id(), n, hold)["n"])

    return app


app = build_app()
