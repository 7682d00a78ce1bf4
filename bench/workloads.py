"""The benchmark's workflows (see ../../shared/BENCHMARK.md), importable by a worker.

``build(url)`` makes a fresh ``App`` on ``url`` with the checkout (sync and async), the
1,000-step workflow and the waiting-cost figure's ``waiter`` (a durable sleep of an
hour) and ``receiver`` (a ``recv`` with an hour's timeout) registered under fixed names,
so that the benchmark process and a ``perdure worker bench.workloads:app`` subprocess
agree on them. The module-level ``app`` reads its database from ``PERDURE_DATABASE_URL``,
as the worker does.

In a worker started by the benchmark, ``PERDURE_BENCH_PROBE_DIR`` turns on the
diagnostics of ``bench/probe.py`` (transactions, finished workflows, CPU); the workflows
themselves are the same. For experiments, ``PERDURE_BENCH_APP_SETTINGS`` (JSON, e.g.
``{"max_workflows": 5000}``) passes App settings to every App built here (the workers'
module-level ``app`` and the in-process figures' apps); the benchmark itself never sets
it. ``PERDURE_BENCH_QUEUE`` (a number) declares the queue
figure's queue with that concurrency (only that figure sets it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import perdure

STEP_NAMES = ("order_intake", "authorize_payment", "update_inventory", "confirm_order")


# -- the four checkout steps as plain functions: the floor (i), and the bodies of the steps


def order_intake(order_id: Any) -> dict[str, Any]:
    return {"order": order_id, "step": "order_intake"}


def authorize_payment(order_id: Any) -> dict[str, Any]:
    return {"order": order_id, "step": "authorize_payment"}


def update_inventory(order_id: Any) -> dict[str, Any]:
    return {"order": order_id, "step": "update_inventory"}


def confirm_order(order_id: Any) -> dict[str, Any]:
    return {"order": order_id, "step": "confirm_order"}


def plain_checkout(order_id: Any) -> dict[str, Any]:
    """The checkout without perdure: four plain calls."""
    order_intake(order_id)
    authorize_payment(order_id)
    update_inventory(order_id)
    return confirm_order(order_id)


@dataclass
class Workloads:
    app: perdure.App
    checkout: Any
    checkout_async: Any
    many_steps: Any
    waiter: Any
    receiver: Any


#: How long the waiting-cost figure's workflows wait: far longer than the figure lasts.
WAIT_SECONDS = 3600.0
#: The topic ``receiver`` waits on (nothing is ever sent to it).
WAIT_TOPIC = "bench.wake"
#: The queue figure's queue, and the variable that declares it in a worker.
QUEUE = "bench"
QUEUE_ENV = "PERDURE_BENCH_QUEUE"


def build(
    database_url: str | None = None, queue_concurrency: int | None = None, **settings: Any
) -> Workloads:
    """A new App on ``database_url`` with the benchmark's workflows registered (and the
    queue ``bench`` with this concurrency, if given)."""
    if queue_concurrency is not None:
        # Only then: bench/compare.py runs these workloads on revisions without queues.
        settings["queues"] = [perdure.Queue(QUEUE, queue_concurrency)]
    settings = {**json.loads(os.environ.get("PERDURE_BENCH_APP_SETTINGS") or "{}"), **settings}
    app = perdure.App(database_url, **settings)

    s_intake = app.step(name="order_intake")(order_intake)
    s_authorize = app.step(name="authorize_payment")(authorize_payment)
    s_inventory = app.step(name="update_inventory")(update_inventory)
    s_confirm = app.step(name="confirm_order")(confirm_order)

    @app.workflow(name="checkout")
    def checkout(order_id: Any) -> dict[str, Any]:
        s_intake(order_id)
        s_authorize(order_id)
        s_inventory(order_id)
        return s_confirm(order_id)

    @app.step(name="order_intake_async")
    async def a_intake(order_id: Any) -> dict[str, Any]:
        return order_intake(order_id)

    @app.step(name="authorize_payment_async")
    async def a_authorize(order_id: Any) -> dict[str, Any]:
        return authorize_payment(order_id)

    @app.step(name="update_inventory_async")
    async def a_inventory(order_id: Any) -> dict[str, Any]:
        return update_inventory(order_id)

    @app.step(name="confirm_order_async")
    async def a_confirm(order_id: Any) -> dict[str, Any]:
        return confirm_order(order_id)

    @app.workflow(name="checkout_async")
    async def checkout_async(order_id: Any) -> dict[str, Any]:
        await a_intake(order_id)
        await a_authorize(order_id)
        await a_inventory(order_id)
        return await a_confirm(order_id)

    @app.step(name="trivial")
    def trivial(i: int) -> int:
        return i

    @app.workflow(name="many_steps")
    def many_steps(n: int) -> int:
        for i in range(n):
            trivial(i)
        return n

    @app.workflow(name="waiter")
    def waiter(n: int) -> int:
        # Longer than suspend_after: the workflow is suspended, holding nothing.
        perdure.sleep(WAIT_SECONDS)
        return n

    @app.workflow(name="receiver")
    def receiver(n: int) -> Any:
        # A message that never comes, with a long timeout: suspended as well.
        return perdure.recv(WAIT_TOPIC, timeout=WAIT_SECONDS)

    return Workloads(app, checkout, checkout_async, many_steps, waiter, receiver)


#: What ``perdure worker bench.workloads:app`` runs (database from PERDURE_DATABASE_URL).
app = build(
    os.environ.get("PERDURE_DATABASE_URL"),
    int(os.environ[QUEUE_ENV]) if os.environ.get(QUEUE_ENV) else None,
).app

if os.environ.get("PERDURE_BENCH_PROBE_DIR"):
    from bench.probe import serve_worker_probe

    serve_worker_probe(os.environ["PERDURE_BENCH_PROBE_DIR"])
