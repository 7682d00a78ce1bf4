"""The app that tests/test_crash.py runs in worker subprocesses and kills with SIGKILL.

Run as ``perdure worker crash_app:app`` with ``tests/`` importable. The database
comes from ``PERDURE_DATABASE_URL``, and every step appends lines to the ledger
file named by ``PERDURE_LEDGER``: one JSON object per line, written with a single
``os.write`` on an ``O_APPEND`` descriptor (atomic for such small lines), with
the time, the workflow ID, the step name, the PID of the process that runs the
step and the phase ("start" when the step function begins, "end" just before it
returns or raises).

The test reads this file to tell which steps ran more than once, and in which
process. The test process imports this module by path and calls ``build_app`` to
get a client app bound to its own database.
"""

from __future__ import annotations

import json
import os
import random
import time
from datetime import datetime, timezone
from typing import Any

import perdure

#: Threads of a worker: at most this many checkouts run at once in one process, so a
#: kill interrupts at most this many steps.
MAX_THREADS = 16
#: Seconds that a worker's lease lasts without a heartbeat.
LEASE_SECONDS = 15.0
#: Seconds that a worker's graceful shutdown (SIGTERM) waits for running workflows.
SHUTDOWN_GRACE = 5.0
#: The retry policy of ``flaky_charge``: the first attempt fails, the second waits 3 s.
FLAKY_RETRY = perdure.Retry(max_attempts=3, initial_interval=3.0, jitter=0.0)

CHECKOUT_STEPS = ("order_intake", "authorize_payment", "update_inventory", "confirm_order")


def ledger(workflow: str, step: str, phase: str) -> None:
    """Append one line to the ledger file (``PERDURE_LEDGER``)."""
    line = json.dumps(
        {"t": time.time(), "wf": workflow, "step": step, "pid": os.getpid(), "phase": phase}
    )
    fd = os.open(os.environ["PERDURE_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def ledger_starts(workflow: str, step: str) -> int:
    """How many times the ledger says ``step`` of ``workflow`` started."""
    try:
        with open(os.environ["PERDURE_LEDGER"], encoding="utf-8") as file:
            entries = [json.loads(line) for line in file if line.strip()]
    except FileNotFoundError:
        return 0
    return sum(
        1 for e in entries if e["wf"] == workflow and e["step"] == step and e["phase"] == "start"
    )


def pause() -> None:
    """Sleep a little, so that kills often land in the middle of a step."""
    time.sleep(random.uniform(0.005, 0.04))


def order_number(order_id: str) -> int:
    """``order-17`` -> 17."""
    return int(order_id.rsplit("-", 1)[1])


def expected_checkout(order_id: str) -> dict[str, Any]:
    """What ``checkout(order_id)`` must return; computed here without any step."""
    n = order_number(order_id)
    items = n % 5 + 1
    return {
        "order_id": order_id,
        "items": items,
        "amount": items * 250,
        "authorization": f"auth-{order_id}-{items * 250}",
        "reserved": items,
        "stock_left": 1000 - items,
        "confirmation": f"conf-{order_id}-auth-{order_id}-{items * 250}-{items}",
    }


def build_app(database_url: str | None = None) -> perdure.App:
    """An app with the ``checkout`` and ``flaky_checkout`` workflows on ``database_url``
    (default: ``PERDURE_DATABASE_URL``)."""
    app = perdure.App(
        database_url,
        poll_interval=0.05,
        lease_seconds=LEASE_SECONDS,
        max_threads=MAX_THREADS,
        shutdown_grace=SHUTDOWN_GRACE,
    )

    @app.step(name="order_intake")
    def order_intake(workflow: str, order_id: str) -> dict[str, Any]:
        ledger(workflow, "order_intake", "start")
        pause()
        result = {"order_id": order_id, "items": order_number(order_id) % 5 + 1}
        ledger(workflow, "order_intake", "end")
        return result

    @app.step(name="authorize_payment")
    def authorize_payment(workflow: str, order_id: str, amount: int) -> dict[str, Any]:
        ledger(workflow, "authorize_payment", "start")
        pause()
        result = {"authorization": f"auth-{order_id}-{amount}", "amount": amount}
        ledger(workflow, "authorize_payment", "end")
        return result

    @app.step(name="update_inventory")
    def update_inventory(workflow: str, order_id: str, items: int) -> dict[str, Any]:
        ledger(workflow, "update_inventory", "start")
        pause()
        result = {"reserved": items, "stock_left": 1000 - items}
        ledger(workflow, "update_inventory", "end")
        return result

    @app.step(name="confirm_order")
    def confirm_order(
        workflow: str, order_id: str, authorization: str, reserved: int
    ) -> dict[str, Any]:
        ledger(workflow, "confirm_order", "start")
        pause()
        result = {"confirmation": f"conf-{order_id}-{authorization}-{reserved}"}
        ledger(workflow, "confirm_order", "end")
        return result

    @app.workflow(name="checkout")
    def checkout(order_id: str) -> dict[str, Any]:
        workflow = perdure.workflow_id()
        intake = order_intake(workflow, order_id)
        payment = authorize_payment(workflow, order_id, intake["items"] * 250)
        stock = update_inventory(workflow, order_id, intake["items"])
        confirmation = confirm_order(
            workflow, order_id, payment["authorization"], stock["reserved"]
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

    @app.step(name="flaky_charge", retry=FLAKY_RETRY)
    def flaky_charge(workflow: str, order_id: str) -> str:
        # Fails its first attempt only: the ledger tells whether an attempt ran before
        # (in this process or in one that was killed).
        first = ledger_starts(workflow, "flaky_charge") == 0
        ledger(workflow, "flaky_charge", "start")
        if first:
            ledger(workflow, "flaky_charge", "end")
            raise RuntimeError(f"payment gateway timeout for {order_id}")
        result = f"charged-{order_id}"
        ledger(workflow, "flaky_charge", "end")
        return result

    @app.workflow(name="flaky_checkout")
    def flaky_checkout(order_id: str) -> dict[str, Any]:
        workflow = perdure.workflow_id()
        intake = order_intake(workflow, order_id)
        charge = flaky_charge(workflow, order_id)
        return {"order_id": intake["order_id"], "charge": charge}

    @app.step(name="fired")
    def fired(workflow: str) -> float:
        ledger(workflow, "fired", "start")
        at = time.time()
        ledger(workflow, "fired", "end")
        return at

    @app.workflow(name="timer")
    def timer(deadline: float) -> float:
        perdure.sleep_until(datetime.fromtimestamp(deadline, timezone.utc))
        return fired(perdure.workflow_id())

    @app.workflow(name="inbox")
    def inbox() -> Any:
        perdure.set_event("stage", "waiting for go")
        message = perdure.recv("go", timeout=300)
        fired(perdure.workflow_id())
        return message

    return app


app = build_app()
