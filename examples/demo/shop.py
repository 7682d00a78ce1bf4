"""The demo shop: a checkout workflow of four steps, and the services those steps call.

The services (order intake, payments, inventory, confirmation) are simulated in
this process: each takes a visible moment, and each one writes what it was asked
to a small SQLite database, ``DEMO_SERVICES_DB``, standing in for the state of
real services. The payments service keeps a ledger keyed by idempotency key, so
a payment that is requested twice (because the worker died before the step was
checkpointed and the step ran again) is charged once and answered with the same
charge. Every step also logs the call in ``service_calls``: the demo reads that
log to show which steps ran twice.

Run it with ``perdure worker shop:app`` from this folder; ``run_demo.py`` does.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import perdure

app = perdure.App(os.environ.get("PERDURE_DATABASE_URL", "sqlite:///demo.db"))

#: The state of the simulated services (a separate file from perdure's database).
SERVICES_DB = os.environ.get("DEMO_SERVICES_DB", "services.db")

#: The inventory service is busy the first time it is asked about this order, so the
#: demo shows a step failing once and perdure retrying it after a backoff.
FLAKY_ORDER = "order-1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    idempotency_key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    charge_id TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    requests INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    idempotency_key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    requests INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS service_calls (
    id INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL,
    step TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT
);
"""


class InventoryBusy(Exception):
    """The inventory service answered "try again later" (a transient failure)."""


@dataclass
class Intake:
    order_id: str
    customer: str
    item_count: int
    amount_cents: int


@dataclass
class Payment:
    charge_id: str
    amount_cents: int


@dataclass
class Reservation:
    reservation_id: str


# -- the simulated services --------------------------------------------------------------


def services_db() -> sqlite3.Connection:
    """A connection to the services' database (autocommit; transactions are explicit)."""
    conn = sqlite3.connect(SERVICES_DB, timeout=10, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)
    return conn


@contextlib.contextmanager
def service_call(order_id: str, step: str) -> Iterator[sqlite3.Connection]:
    """Log one call of a service: a row when it starts, its outcome when it ends. A call
    whose worker was killed keeps ``finished_at`` NULL."""
    with contextlib.closing(services_db()) as conn:
        call_id = conn.execute(
            "INSERT INTO service_calls (order_id, step, pid, started_at) VALUES (?, ?, ?, ?)",
            (order_id, step, os.getpid(), time.time()),
        ).lastrowid
        outcome = "ok"
        try:
            yield conn
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            conn.execute(
                "UPDATE service_calls SET finished_at = ?, outcome = ? WHERE id = ?",
                (time.time(), outcome, call_id),
            )


def say(message: str) -> None:
    """One narrated line of the worker."""
    print(f"[worker {os.getpid()}] {message}", flush=True)


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


# -- the steps ------------------------------------------------------------------------------


@app.step
def order_intake(order: dict[str, Any]) -> Intake:
    """Validate the order and price it."""
    order_id = order["order_id"]
    with service_call(order_id, "order_intake"):
        time.sleep(0.5)
        items = order["items"]
        if not items:
            raise ValueError(f"{order_id} has no items")
        amount = sum(item["quantity"] * item["price_cents"] for item in items)
        count = sum(item["quantity"] for item in items)
    say(f"{order_id} received from {order['customer']}: {count} item(s), {dollars(amount)}")
    return Intake(order_id, order["customer"], count, amount)


@app.step
def authorize_payment(order_id: str, amount_cents: int, idempotency_key: str) -> Payment:
    """Ask the payments service for a charge. It is idempotent on the key: asked again,
    it answers with the charge it made the first time."""
    with service_call(order_id, "authorize_payment") as conn:
        time.sleep(0.3)  # the request travels to the payment provider
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO payments (idempotency_key, order_id, charge_id, amount_cents, requests) "
            "VALUES (?, ?, ?, ?, 1) ON CONFLICT (idempotency_key) "
            "DO UPDATE SET requests = requests + 1",
            (idempotency_key, order_id, f"ch_{uuid.uuid4().hex[:12]}", amount_cents),
        )
        charge_id, requests = conn.execute(
            "SELECT charge_id, requests FROM payments WHERE idempotency_key = ?",
            (idempotency_key,),
        ).fetchone()
        conn.execute("COMMIT")
        time.sleep(0.6)  # ... and the answer travels back
    again = f", request #{requests}: same charge returned" if requests > 1 else ""
    say(f"payment authorized for {order_id} (charge {charge_id}, {dollars(amount_cents)}{again})")
    return Payment(charge_id, amount_cents)


@app.step(retry=perdure.Retry(max_attempts=5, initial_interval=0.5, backoff=2.0))
def update_inventory(
    order_id: str, items: list[dict[str, Any]], idempotency_key: str
) -> Reservation:
    """Reserve the items in the warehouse (idempotent on the key, like the payment)."""
    with service_call(order_id, "update_inventory") as conn:
        time.sleep(0.7)
        if order_id == FLAKY_ORDER:
            (busy_before,) = conn.execute(
                "SELECT count(*) FROM service_calls WHERE order_id = ? AND step = ? "
                "AND outcome LIKE 'InventoryBusy%'",
                (order_id, "update_inventory"),
            ).fetchone()
            if not busy_before:
                say(f"inventory service busy for {order_id}: the step fails, perdure retries it")
                raise InventoryBusy("503 Service Unavailable: warehouse busy, try again")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO reservations (idempotency_key, order_id, reservation_id, requests) "
            "VALUES (?, ?, ?, 1) ON CONFLICT (idempotency_key) "
            "DO UPDATE SET requests = requests + 1",
            (idempotency_key, order_id, f"res_{uuid.uuid4().hex[:8]}"),
        )
        (reservation_id,) = conn.execute(
            "SELECT reservation_id FROM reservations WHERE idempotency_key = ?",
            (idempotency_key,),
        ).fetchone()
        conn.execute("COMMIT")
    skus = ", ".join(f"{item['quantity']} x {item['sku']}" for item in items)
    say(f"inventory reserved for {order_id}: {skus} ({reservation_id})")
    return Reservation(reservation_id)


@app.step
def confirm_order(order_id: str, customer: str, charge_id: str) -> str:
    """Send the confirmation e-mail; returns the confirmation number."""
    with service_call(order_id, "confirm_order"):
        time.sleep(0.5)
    confirmation = f"CONF-{order_id.rsplit('-', 1)[-1].zfill(4)}"
    say(f"{order_id} confirmed: e-mail sent to {customer} ({confirmation}, charge {charge_id})")
    return confirmation


# -- the workflow -----------------------------------------------------------------------------


@app.workflow
def checkout(order: dict[str, Any]) -> dict[str, Any]:
    """Take an order through intake, payment, inventory and confirmation.

    Each step's result is checkpointed when it completes: after a crash, the workflow
    runs again from the top, completed steps return their recorded results without
    running, and the step that was in flight runs again.
    """
    # The idempotency keys are derived from the workflow ID, the same on every run.
    workflow_id = perdure.workflow_id()
    intake = order_intake(order)
    payment = authorize_payment(
        intake.order_id, intake.amount_cents, idempotency_key=f"{workflow_id}:authorize_payment"
    )
    reservation = update_inventory(
        intake.order_id, order["items"], idempotency_key=f"{workflow_id}:update_inventory"
    )
    confirmation = confirm_order(intake.order_id, intake.customer, payment.charge_id)
    return {
        "order_id": intake.order_id,
        "amount_cents": payment.amount_cents,
        "charge_id": payment.charge_id,
        "reservation_id": reservation.reservation_id,
        "confirmation": confirmation,
    }
