"""The checkout example (``examples/checkout``), for real: service processes, worker
processes, an outage and a SIGKILL.

``make demo`` runs to the end and leaves no process behind; and the scenario it
narrates holds on both stores: with Inventory Update unreachable (its process killed)
and the worker SIGKILLed during the outage, a new worker finishes every order once the
service is back, each customer charged exactly once and told "payment received, your
order will be confirmed shortly" meanwhile.
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
from typing import Any

import pytest
from ledger import wait_for

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
    assert "Worker 1 killed (exit code -9)" in flat
    assert "recovering workflow order-1" in flat
    assert re.search(r"Inventory Update is back: restarted \(pid \d+\) on the same port", flat)
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


def inventory_step(client: Any, order_id: str) -> tuple[set[str], int]:
    """The completed steps of an order's workflow, and the attempts of update_inventory."""
    steps = client.retrieve(order_id).status().steps
    done = {s.name for s in steps if s.status == "SUCCEEDED"}
    attempts = next((s.attempts for s in steps if s.name == "update_inventory"), 0)
    return done, attempts


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
        stock_before = inventory.get("/stock")
        reserved = inventory.wait_for_output("reserved ", timeout=30)
        inventory.kill()
        assert refuses_connections(inventory.port)
        # That reservation was made, but its answer is lost.
        found = re.search(r" for (\S+) \((\w+)\)$", reserved)
        assert found, reserved
        lost_order, lost_reservation = found.groups()

        def reached_the_outage(oid: str) -> bool:
            done, attempts = inventory_step(client, oid)
            return "authorize_payment" in done and attempts >= 1

        wait_for(
            lambda: all(reached_the_outage(oid) for oid in order_ids),
            30,
            "every order to fail its inventory update",
        )
        for oid in order_ids:
            assert client.get_event(oid, "status") == shop.PAYMENT_RECEIVED
            assert client.retrieve(oid).status().status == "RUNNING"

        assert worker1.kill() == -signal.SIGKILL
        at_kill = {oid: inventory_step(client, oid)[1] for oid in order_ids}
        worker2 = running.start_worker()
        worker2.wait_ready()
        wait_for(
            lambda: all(inventory_step(client, oid)[1] > at_kill[oid] for oid in order_ids),
            30,
            "worker 2 to retry every inventory update during the outage",
        )
        assert all(not handle.status().done for handle in handles.values())

        inventory = running.restart("inventory")
        kept = {r["reservation_id"] for r in inventory.get("/reservations")}
        assert lost_reservation in kept, "the restarted service lost its state"
        receipts = {oid: handle.result(timeout=30) for oid, handle in handles.items()}

        for oid in order_ids:
            assert client.retrieve(oid).status().status == "SUCCEEDED"
            assert client.get_event(oid, "status") == shop.CONFIRMED
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
        # The lost answer's retry, with the same key, got the first reservation back.
        assert receipts[lost_order].reservation_id == lost_reservation
        assert next(r for r in reservations if r["order_id"] == lost_order)["requests"] >= 2
        mugs = sum(item["quantity"] for oid in order_ids for item in items[oid])
        assert running.services["inventory"].get("/stock")["mug"] == stock_before["mug"] - mugs
        emails = running.services["confirmation"].get("/confirmations")
        assert sorted(e["order_id"] for e in emails) == order_ids

        assert worker2.terminate(timeout=20) == 0
        pids = running.pids()
    assert all(_gone(pid) for pid in pids), f"a process is still running: {pids}"
