"""The checkout workflow: four steps, each a call to one of the services over HTTP.

Order Intake prices the order, Payment Authorization charges the card, Inventory
Update reserves the items, Order Confirmation e-mails the customer. Each step's
result is checkpointed when it returns; after a crash the workflow resumes from its
last completed step on any worker. The payment is a saga step: if the items turn out
to be out of stock (Inventory Update answers 409, which no retry fixes), the charge is
refunded (``perdure.saga``) and the customer told so. A failed inventory update is retried only once
the service's health probe passes (``INVENTORY_RETRY``), the workflow suspended while
it waits. The customer-facing status is published with
``perdure.set_event("status", ...)``, for the shop's front end to read with
``app.get_event(order_id, "status")``.

The services' addresses come from ``CHECKOUT_INTAKE_URL``, ``CHECKOUT_PAYMENT_URL``,
``CHECKOUT_INVENTORY_URL`` and ``CHECKOUT_CONFIRMATION_URL``; the database from
``PERDURE_DATABASE_URL`` (default ``./perdure.db``). Run the workflows with
``perdure worker shop:app`` from this folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

import perdure

app = perdure.App()

#: What the customer sees once the payment is authorized, until the order is confirmed.
PAYMENT_RECEIVED = "payment received, your order will be confirmed shortly"
CONFIRMED = "confirmed"
#: What the customer sees when the items are gone: the charge was refunded.
OUT_OF_STOCK = "sorry, your items are out of stock: your payment was refunded"


class ServiceUnavailable(Exception):
    """A service answered 5xx: it is there but can't serve now (worth retrying)."""


class OutOfStock(Exception):
    """Inventory Update answered 409: the items are gone (no retry fixes that)."""


#: Intake, payment and confirmation ride out a brief network hiccup.
SERVICE_RETRY = perdure.Retry(
    max_attempts=3, initial_interval=0.5, retry_on=(httpx.TransportError, ServiceUnavailable)
)


def service_url(service: str) -> str:
    """The base URL of a service, from ``CHECKOUT_<SERVICE>_URL`` (read on every call, so
    that a client importing this module before the services run needs none of them)."""
    variable = f"CHECKOUT_{service.upper()}_URL"
    base = os.environ.get(variable)
    if not base:
        raise RuntimeError(f"{variable} is not set: where does the {service} service run?")
    return base


def health_probe(service: str) -> perdure.probes.Probe:
    """A probe of the service's ``GET /health``: it passes when the service answers
    (``perdure.probes.http``: a 2xx or 3xx status within 2 s).

    The URL is looked up when the probe runs (in the worker, whose environment names the
    services). The probe's name, which logs and ``status().waiting_for`` show, is the URL
    when this module is imported with the address set, as in a worker.
    """
    variable = f"CHECKOUT_{service.upper()}_URL"
    where = os.environ.get(variable) or f"${variable}"

    def check() -> bool:
        return perdure.probes.http(f"{service_url(service)}/health", timeout=2.0)()

    return perdure.probes.Probe(check, f"http GET {where}/health")


#: Inventory Update is retried once the service is back, not on a clock: after a failed
#: attempt (and a short backoff, waited in place: the worker holds the workflow meanwhile,
#: and the demo kills it then) the next attempt waits for the service's health probe.
#: While the probe fails no attempt runs and none is counted, however long the outage
#: lasts, so five attempts are plenty; the workflow is suspended meanwhile (no thread
#: held in any worker) and probed again after 1.25 s, then every 2 s. Each probe wait is
#: longer than the worker's ``suspend_after`` (1 s) so that it suspends rather than
#: waits in place; a real shop would probe less often (``probe_max_interval`` of a
#: minute, say). Each failed probe is recorded, so a crash keeps the wait.
INVENTORY_RETRY = perdure.Retry(
    max_attempts=5,
    initial_interval=0.75,
    retry_on=(httpx.TransportError, ServiceUnavailable),
    wait_for=health_probe("inventory"),
    probe_interval=1.25,
    probe_max_interval=2.0,
)

#: Seconds to wait for a service's answer. The warehouse is the slowest.
TIMEOUT = 10.0


@dataclass
class Order:
    """The order as Order Intake recorded and priced it."""

    order_id: str
    customer: str
    items: list[dict[str, Any]]
    amount_cents: int


@dataclass
class Charge:
    charge_id: str
    amount_cents: int


@dataclass
class Reservation:
    reservation_id: str


@dataclass
class Receipt:
    """What a completed checkout returns."""

    order_id: str
    charge_id: str
    amount_cents: int
    reservation_id: str
    confirmation: str


def call(service: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to a service and return its JSON answer.

    A refused connection or a broken one raises ``httpx.TransportError``, a 5xx answer
    ``ServiceUnavailable``: both are retried by the step's policy. A 4xx answer (a bad
    request, out of stock) raises ``httpx.HTTPStatusError``, which no retry would fix.
    """
    response = httpx.post(f"{service_url(service)}{path}", json=body, timeout=TIMEOUT)
    if response.status_code >= 500:
        raise ServiceUnavailable(f"{service} answered {response.status_code}: {response.text}")
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


@app.step(retry=SERVICE_RETRY)
def take_order(order: dict[str, Any]) -> Order:
    """Order Intake records the order (idempotent on the order ID) and prices it."""
    answer = call("intake", "/orders", order)
    return Order(answer["order_id"], answer["customer"], answer["items"], answer["amount_cents"])


@app.step(retry=SERVICE_RETRY)
def authorize_payment(order: Order, idempotency_key: str) -> Charge:
    """Payment Authorization charges the card, once per key however often it is asked."""
    body = {
        "idempotency_key": idempotency_key,
        "order_id": order.order_id,
        "amount_cents": order.amount_cents,
    }
    answer = call("payment", "/charges", body)
    return Charge(answer["charge_id"], answer["amount_cents"])


@app.step(retry=SERVICE_RETRY)
def refund_payment(charge: Charge, idempotency_key: str) -> str:
    """Payment Authorization refunds the charge, once per key: the undo of
    ``authorize_payment``."""
    body = {"idempotency_key": idempotency_key, "charge_id": charge.charge_id}
    refund_id: str = call("payment", "/refunds", body)["refund_id"]
    return refund_id


@app.step(retry=INVENTORY_RETRY)
def update_inventory(order: Order, idempotency_key: str) -> Reservation:
    """Inventory Update reserves the items, once per key; ``OutOfStock`` when they are
    gone."""
    body = {"idempotency_key": idempotency_key, "order_id": order.order_id, "items": order.items}
    try:
        answer = call("inventory", "/reservations", body)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 409:
            raise OutOfStock(exc.response.json().get("detail", "out of stock")) from None
        raise
    return Reservation(answer["reservation_id"])


@app.step(retry=SERVICE_RETRY)
def confirm_order(order: Order, charge: Charge, reservation: Reservation) -> str:
    """Order Confirmation e-mails the customer (once per order) and returns the number."""
    body = {
        "order_id": order.order_id,
        "customer": order.customer,
        "charge_id": charge.charge_id,
        "reservation_id": reservation.reservation_id,
    }
    confirmation: str = call("confirmation", "/confirmations", body)["confirmation"]
    return confirmation


@app.workflow
def checkout(order: dict[str, Any]) -> Receipt:
    """Take an order through intake, payment, inventory and confirmation; an order whose
    items are out of stock is refunded and fails with ``OutOfStock``.

    The idempotency keys derive from the workflow ID, which is the same on every run of
    this workflow: a step run again after a crash asks with the same key, and the
    service answers with what it did the first time instead of doing it again.
    """
    workflow_id = perdure.workflow_id()
    taken = take_order(order)
    try:
        # If anything in the block fails (the items are out of stock), the registered
        # undo runs: the charge is refunded, durably, with its own retries.
        with perdure.saga() as saga:
            charge = authorize_payment(taken, idempotency_key=f"{workflow_id}:authorize")
            saga.compensate(refund_payment, charge, idempotency_key=f"{workflow_id}:refund")
            # The customer has paid: whatever happens to the rest, they are told their
            # order is on its way rather than shown an error.
            perdure.set_event("status", PAYMENT_RECEIVED)
            reservation = update_inventory(taken, idempotency_key=f"{workflow_id}:inventory")
    except OutOfStock:
        perdure.set_event("status", OUT_OF_STOCK)  # the refund has gone through
        raise
    confirmation = confirm_order(taken, charge, reservation)
    perdure.set_event("status", CONFIRMED)
    return Receipt(
        order_id=taken.order_id,
        charge_id=charge.charge_id,
        amount_cents=charge.amount_cents,
        reservation_id=reservation.reservation_id,
        confirmation=confirmation,
    )
