"""The checkout example (``examples/checkout``), for real: service processes, worker
processes, an outage and a SIGKILL.

``make demo`` runs to the end and leaves no process behind; and the scenario it
narrates holds on both stores: with Inventory Update unreachable (its process killed),
each order's inventory update fails once and then waits for the service's health probe,
suspended and using no further attempt, also across a SIGKILL of the worker and a new
worker; once the service is back the probe passes, the next attempt gets through, and
every order completes, each customer charged exactly once and told "payment received,
your order will be confirmed shortly" meanwhile.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest
from ledger import wait_for

import perdure

pytestmark = pytest.mark.slow

CHECKOUT_DIR = Path(__file__).resolve().parent.parent / "examples" / "checkout"
DEMO = CHECKOUT_DIR / "run_demo.py"
ORDERS = 5


def load_example(module: str) -> ModuleType:
    """Import examples/checkout/MODULE.py afresh under a name of its own: another example's
    module of the same name can't shadow it, nor it another."""
    name = f"checkout_{module}_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, CHECKOUT_DIR / f"{module}.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded  # dataclasses look their module up there
    spec.loader.exec_module(loaded)
    return loaded


_cluster = load_example("cluster")
cluster, refuses_connections = _cluster.cluster, _cluster.refuses_connections


def _gone(pid: int) -> bool:
    """Whether no process, and no process group, has this ID any more."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:  # the ID was reused by another user's process
            continue
        return False
    return True


@pytest.mark.timeout(90)
def test_demo_runs_to_the_end_and_leaves_no_process_behind() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERDURE_", "CHECKOUT_"))}
    done = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=60, env=env
    )
    out = done.stdout
    assert done.returncode == 0, f"demo failed:\n{out}\n{done.stderr}"
    assert "DEMO FAILED" not in out

    # The narration is wrapped: look at it with every run of whitespace made one space.
    flat = " ".join(out.split())
    assert re.search(r"Port \d+ now refuses connections", flat), out
    assert flat.count("'payment received, your order will be confirmed shortly'") == ORDERS
    # Each inventory update failed once; the workflows then wait for the probe, suspended,
    # with one attempt used, before the kill, after it, and under worker 2.
    assert re.search(
        r"status\(\)\.waiting_for: 'probe http GET http://127\.0\.0\.1:\d+/health to pass", flat
    ), out
    assert flat.count(" 1 attempt, probe failed ") == 2 * ORDERS, out
    assert "Worker 1 killed (exit code -9)" in flat
    # The kill interrupted workflows that worker 1 held (they waited out their backoff in
    # it): the table at the kill names it as their owner, and worker 2 took them over.
    held = re.search(r"Worker 1 held (\d) of the 5 workflows when it died", flat)
    assert held and int(held.group(1)) >= 1, out
    assert len(re.findall(r"order-\d +RUNNING +worker 1 ", out)) == int(held.group(1)), out
    assert "the kill interrupted them" in flat
    assert "Worker 2 goes on probing on the recorded backoff" in flat
    assert re.search(r"Inventory Update is back: restarted \(pid \d+\) on the same port", flat)
    passed = re.findall(r"\[worker 2\] order-\d update_inventory: probe passed after", out)
    assert len(passed) == ORDERS, out
    assert "Attempts of each inventory update: 2 per order" in flat
    # The reservation whose answer the outage cut off is answered from the kept state.
    assert re.search(r"key (order-\d):inventory again \(request #\d\): nothing taken", flat), out
    assert flat.count("status 'confirmed'") == ORDERS
    for n in range(1, ORDERS + 1):
        assert re.search(rf"order-{n}: 1 charge, \$[\d.,]+ \(key order-{n}:authorize", flat), out
    assert "exactly one charge per order (5 charges for 5 orders)" in flat

    listed = re.search(r"All (\d+) processes the demo started have exited \(pids ([\d, ]+)\)", flat)
    assert listed, out
    pids = [int(pid) for pid in listed.group(2).replace(",", " ").split()]
    # Four services, the inventory service again, two workers.
    assert len(pids) == int(listed.group(1)) == 7, pids
    started = {int(pid) for pid in re.findall(r"pid (\d+)", out)}
    assert started == set(pids), (started, pids)
    assert all(_gone(pid) for pid in pids), f"a process of the demo is still running: {pids}"
    workdir = re.search(r"sqlite:///(/\S+)/perdure\.db", out)
    assert workdir and not Path(workdir.group(1)).exists(), "the demo left its folder behind"


# -- the scenario on both stores -------------------------------------------------------------


@pytest.fixture
def shop(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """examples/checkout/shop.py, imported afresh with its app on the test's database: a
    client that starts and reads workflows (it is never launched)."""
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    module = load_example("shop")
    yield module
    module.app.shutdown()
    del sys.modules[module.__name__]


class InventoryState(NamedTuple):
    """Where an order's workflow stands, as its status says."""

    done: set[str]  # the completed steps
    attempts: int  # the attempts of update_inventory
    probe_failures: int  # the failed probes its retry has waited on so far
    waiting_for: str | None  # the workflow's, while it is suspended
    step_waiting_for: str | None  # update_inventory's, while its probe fails
    owner: str | None  # the executor that runs it now


def inventory_state(client: Any, order_id: str) -> InventoryState:
    status = client.retrieve(order_id).status()
    done = {s.name for s in status.steps if s.status == "SUCCEEDED"}
    step = next((s for s in status.steps if s.name == "update_inventory"), None)
    attempts = step.attempts if step else 0
    step_waiting_for = step.waiting_for if step else None
    counted = re.search(r"\(failed (\d+) time\(s\)\)$", step_waiting_for or "")
    failures = int(counted.group(1)) if counted else 0
    return InventoryState(
        done, attempts, failures, status.waiting_for, step_waiting_for, status.owner
    )


def show(name: str, line: str) -> None:
    # pytest shows what a failed test printed: the processes' own story.
    print(f"[{name}] {line}")


@pytest.mark.timeout(120)
def test_orders_complete_through_an_outage_and_a_worker_crash(
    database_url: str, tmp_path: Path, shop: ModuleType
) -> None:
    client = shop.app
    order_ids = [f"order-{n}" for n in range(1, ORDERS + 1)]
    items: dict[str, list[dict[str, Any]]] = {
        oid: [{"sku": "mug", "quantity": n}] for n, oid in enumerate(order_ids, start=1)
    }

    def outage_states() -> dict[str, InventoryState]:
        # Read during the outage: the probe holds back every attempt after the first.
        states = {oid: inventory_state(client, oid) for oid in order_ids}
        for oid, state in states.items():
            assert state.attempts <= 1, (oid, state)
        return states

    # The outage begins at the first reservation, before the warehouse answers (it takes
    # a second to): no order gets through Inventory Update before it.
    with cluster(tmp_path, database_url, show, {"inventory": 1.0}) as running:
        running.start_services()
        worker1 = running.start_worker()
        worker1.wait_ready()
        handles = {
            oid: client.start(
                shop.checkout,
                {"order_id": oid, "customer": f"{oid}@example.com", "items": items[oid]},
                workflow_id=oid,
            )
            for oid in order_ids
        }
        inventory = running.services["inventory"]
        probe = f"probe http GET {inventory.url}/health to pass"
        stock_before = inventory.get("/stock")
        reserved = inventory.wait_for_output("reserved ", timeout=30)
        inventory.kill()
        assert refuses_connections(inventory.port)
        # That reservation was made, but its answer is lost.
        found = re.search(r" for (\S+) \((\w+)\)$", reserved)
        assert found, reserved
        lost_order, lost_reservation = found.groups()

        # Each order's inventory update fails once, then waits for the probe: suspended
        # (no executor holds it), its step naming the probe, no further attempt.
        suspended: set[str] = set()

        def waits_for_the_probe(oid: str, state: InventoryState) -> bool:
            return (
                "authorize_payment" in state.done
                and state.attempts == 1
                and state.owner is None
                and (state.waiting_for or "").startswith(f"{probe} (next probe at ")
                and (state.step_waiting_for or "").startswith(f"{probe} (failed ")
            )

        def all_suspended() -> bool:
            suspended.update(
                oid for oid, s in outage_states().items() if waits_for_the_probe(oid, s)
            )
            return suspended == set(order_ids)

        # Each attempt 1 fails at the outage; its backoff is waited in place, the workflow
        # held by worker 1: seen so in the database, worker 1 is killed, interrupting them.
        wait_for(
            lambda: all(state.attempts == 1 for state in outage_states().values()),
            30,
            "every order's attempt 1 to fail",
            interval=0.05,
        )
        assert worker1.kill() == -signal.SIGKILL
        at_kill = outage_states()
        assert all(state.attempts == 1 for state in at_kill.values()), at_kill
        held = {oid for oid, state in at_kill.items() if state.owner is not None}
        assert held, f"the kill interrupted no workflow: {at_kill}"
        for oid in order_ids:
            assert client.get_event(oid, "status") == shop.PAYMENT_RECEIVED
            assert client.retrieve(oid).status().status == "RUNNING"

        # Worker 2 takes the held workflows over; each one waits for the probe, suspended.
        worker2 = running.start_worker()
        worker2.wait_ready()
        wait_for(all_suspended, 45, "every order to wait for the probe, suspended", interval=0.05)
        at_takeover = outage_states()
        # Worker 2 goes on probing on the recorded backoff (twice per order here), and
        # still uses no attempt.
        wait_for(
            lambda: all(
                state.probe_failures >= at_takeover[oid].probe_failures + 2
                for oid, state in outage_states().items()
            ),
            30,
            "worker 2 to probe every order twice during the outage",
            interval=0.05,
        )
        assert all(state.attempts == 1 for state in outage_states().values())
        assert all(not handle.status().done for handle in handles.values())

        inventory = running.restart("inventory")
        kept = {r["reservation_id"] for r in inventory.get("/reservations")}
        assert lost_reservation in kept, "the restarted service lost its state"
        receipts = {oid: handle.result(timeout=30) for oid, handle in handles.items()}

        for oid in order_ids:
            assert client.retrieve(oid).status().status == "SUCCEEDED"
            assert client.get_event(oid, "status") == shop.CONFIRMED
            # One attempt failed at the outage; the one after the probe passed got through.
            assert inventory_state(client, oid).attempts == 2
        charges = running.services["payment"].get("/charges")
        assert Counter(c["order_id"] for c in charges) == dict.fromkeys(order_ids, 1), charges
        for charge in charges:
            receipt = receipts[charge["order_id"]]
            assert charge["charge_id"] == receipt.charge_id
            assert charge["idempotency_key"] == f"{receipt.order_id}:authorize"
            assert charge["requests"] == 1  # payment was checkpointed: never asked again
        orders = running.services["intake"].get("/orders")
        assert sorted((o["order_id"], o["requests"]) for o in orders) == [
            (oid, 1) for oid in order_ids
        ]
        reservations = running.services["inventory"].get("/reservations")
        assert sorted(r["reservation_id"] for r in reservations) == sorted(
            r.reservation_id for r in receipts.values()
        )
        # The lost answer's retry, attempt 2 with the same key, got the first reservation
        # back: asked twice in all, once per attempt.
        assert receipts[lost_order].reservation_id == lost_reservation
        assert next(r for r in reservations if r["order_id"] == lost_order)["requests"] == 2
        mugs = sum(item["quantity"] for oid in order_ids for item in items[oid])
        assert running.services["inventory"].get("/stock")["mug"] == stock_before["mug"] - mugs
        emails = running.services["confirmation"].get("/confirmations")
        assert sorted(e["order_id"] for e in emails) == order_ids

        assert worker2.terminate(timeout=20) == 0
        pids = running.pids()
    assert all(_gone(pid) for pid in pids), f"a process is still running: {pids}"


@pytest.mark.timeout(120)
def test_an_order_out_of_stock_is_refunded_and_the_customer_told(
    database_url: str, tmp_path: Path, shop: ModuleType
) -> None:
    # Inventory Update answers 409 (a 4xx no retry fixes): the saga refunds the charge,
    # the customer is told, and the workflow fails with the original error.
    client = shop.app
    with cluster(tmp_path, database_url, show) as running:
        running.start_services()
        running.start_worker().wait_ready()
        stock_before = running.services["inventory"].get("/stock")
        order = {
            "order_id": "order-big",
            "customer": "big@example.com",
            "items": [{"sku": "mug", "quantity": 1000}],
        }
        handle = client.start(shop.checkout, order, workflow_id="order-big")
        with pytest.raises(perdure.WorkflowFailedError) as caught:
            handle.result(timeout=60)
        assert caught.value.type_name.endswith(":OutOfStock")
        assert "not enough mug" in caught.value.message
        assert "compensations run (in order): refund_payment" in caught.value.traceback
        assert client.get_event("order-big", "status") == shop.OUT_OF_STOCK
        charges = running.services["payment"].get("/charges")
        refunds = running.services["payment"].get("/refunds")
        assert [c["order_id"] for c in charges] == ["order-big"]
        assert [(r["charge_id"], r["idempotency_key"]) for r in refunds] == [
            (charges[0]["charge_id"], "order-big:refund")
        ]
        assert running.services["inventory"].get("/stock") == stock_before
        assert running.services["confirmation"].get("/confirmations") == []
