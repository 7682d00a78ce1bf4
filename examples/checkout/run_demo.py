"""``make demo``: a checkout across four services, through a network outage and a crash.

1. Start the four services (each its own uvicorn process, port and SQLite file) and a
   worker process (``python -m perdure worker shop:app``).
2. A client places five orders: each starts a ``checkout`` workflow.
3. At the first stock reservation, before its answer is sent, the Inventory Update
   service goes down: its process is killed, and its port refuses connections.
4. Every payment is authorized; every inventory update fails once (attempt 1) and
   waits out its short backoff in place, its workflow held by the worker. Seen so in
   the database, the worker is killed with SIGKILL: the kill interrupts them.
5. Once the dead worker's leases run out, a new worker takes the workflows over and
   replays them: each waits for the service's health probe (``shop.INVENTORY_RETRY``),
   suspended, no further attempt used, and the customers are told "payment received,
   your order will be confirmed shortly".
6. The new worker goes on probing, on the recorded probe backoff; still no attempt used.
7. Inventory Update comes back on the same port with its state; each order's probe
   passes and its attempt 2 gets through; every order completes.
8. Check the services' own records (one charge, one reservation and one e-mail per
   order; the stock down by exactly what was ordered), and stop everything.

Everything lives in a fresh temporary folder (perdure's SQLite database and the
services' files), removed at the end. Every process the demo starts is stopped on
the way out, also on Ctrl-C or an error. Exit code 0 when every check passed; on a
failed check it prints "DEMO FAILED" and exits with 1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import Cluster, ClusterError, cluster, refuses_connections  # noqa: E402
from narration import (  # noqa: E402
    OrderState,
    Output,
    dollars,
    elapsed,
    narrate,
    order_state,
    paragraph,
    say,
)
from services import TITLES  # noqa: E402

CUSTOMERS = ("ada", "grace", "alan", "edsger", "barbara")
SKUS = ("mug", "t-shirt", "stickers", "hoodie", "cap")
ORDER_COUNT = 5
#: Seconds each service takes to answer once it has done its work. The warehouse's
#: second lets the outage, which begins at the first reservation, catch every order.
LATENCY = {"intake": 0.1, "payment": 0.3, "inventory": 1.0, "confirmation": 0.2}


class DemoFailed(Exception):
    """Something did not turn out as the demo expects."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)


def make_order(n: int) -> dict[str, Any]:
    """A small, varied order."""
    items = [
        {"sku": SKUS[(n + k) % len(SKUS)], "quantity": 1 + (n + k) % 2} for k in range(1 + n % 3)
    ]
    return {
        "order_id": f"order-{n}",
        "customer": f"{CUSTOMERS[(n - 1) % len(CUSTOMERS)]}@example.com",
        "items": items,
    }


# -- the demo ------------------------------------------------------------------------------


class Demo:
    """The acts of the demo, in order, on one cluster of processes."""

    def __init__(self, running: Cluster, shop: ModuleType, output: Output) -> None:
        self.running = running
        self.shop = shop
        self.client = shop.app  # never launched: it only starts workflows and reads them
        self.output = output
        self.order_ids = [f"order-{n}" for n in range(1, ORDER_COUNT + 1)]
        self.orders = {oid: make_order(n) for n, oid in enumerate(self.order_ids, start=1)}
        self.handles: dict[str, Any] = {}
        self.stock_before: dict[str, int] = {}
        # The reservation made just before the outage, whose answer never came back.
        self.lost_order = self.lost_reservation = ""

    def states(self) -> dict[str, OrderState]:
        return {oid: order_state(self.client, oid) for oid in self.order_ids}

    def outage_states(self) -> dict[str, OrderState]:
        """``states()``, checked against the promise of the outage: no inventory update
        ever gets past its first attempt while the service is down."""
        states = self.states()
        for oid, s in states.items():
            check(
                s.inventory_attempts <= 1,
                f"{oid}'s inventory update used {s.inventory_attempts} attempts during the "
                "outage: the probe should have held back every attempt after the first",
            )
        return states

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll until ``condition`` holds; fail after ``timeout`` seconds, or as soon as
        the worker that should be running has exited."""
        deadline = time.monotonic() + timeout
        while not condition():
            worker = self.running.workers[-1]
            if not worker.alive:
                raise DemoFailed(f"{worker.name} exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    def wait_for_states(
        self, condition: Callable[[OrderState], bool], timeout: float, what: str
    ) -> dict[str, OrderState]:
        """Wait until every order's state meets ``condition`` at once (each read checked
        by ``outage_states``); returns that reading."""
        seen: dict[str, OrderState] = {}

        def met() -> bool:
            seen.update(self.outage_states())
            return all(condition(s) for s in seen.values())

        self.wait_for(met, timeout, what)
        return seen

    def owner(self, executor_id: str | None) -> str:
        """Which worker an executor ID ("host:pid:random") names."""
        if executor_id is None:
            return "none"
        pid = executor_id.split(":")[-2]
        return next((w.name for w in self.running.workers if str(w.pid) == pid), executor_id)

    def table(self, states: dict[str, OrderState]) -> None:
        say(
            f"       {'order':<9} {'workflow':<9} {'owner':<9} {'completed steps':<31} "
            "update_inventory"
        )
        for oid, s in states.items():
            owner = self.owner(s.owner)
            if s.probe_failures:
                step = (
                    f"{s.inventory_attempts} attempt, probe failed {s.probe_failures}x, "
                    f"next probe in {max(s.next_probe_in or 0.0, 0.0):.1f} s"
                )
            else:
                step = f"{s.inventory_attempts} attempt"
            say(f"       {oid:<9} {s.status:<9} {owner:<9} {', '.join(s.done):<31} {step}")

    def run(self) -> None:
        self.start()
        self.place_orders()
        self.cut_inventory_off()
        at_kill = self.kill_the_worker()
        suspended = self.take_over(at_kill)
        self.keep_probing(suspended)
        receipts = self.bring_inventory_back()
        self.prove(receipts)
        self.stop()

    def start(self) -> None:
        self.running.start_services()
        narrate("Started the four services, each a FastAPI app in its own uvicorn process:", "1. ")
        for name, service in self.running.services.items():
            title = TITLES[name]
            say(f"       {title:<22} {service.url:<23} pid {service.pid:<7} state {name}.db")
        self.stock_before = self.running.services["inventory"].get("/stock")
        worker = self.running.start_worker()
        narrate(f"Started worker 1 (pid {worker.pid}): python -m perdure worker shop:app", "   ")
        worker.wait_ready()

    def place_orders(self) -> None:
        narrate(
            f"A client places {ORDER_COUNT} orders. Placing an order records a checkout "
            "workflow in the database; the worker picks it up and runs it.",
            "2. ",
        )
        for oid in self.order_ids:
            self.handles[oid] = self.client.start(
                self.shop.checkout, self.orders[oid], workflow_id=oid
            )

    def cut_inventory_off(self) -> None:
        # At the first reservation: its answer takes the warehouse a second, so no order
        # gets an answer from Inventory Update before the outage, and every one meets it.
        inventory = self.running.services["inventory"]
        reserved = inventory.wait_for_output("reserved ", timeout=30)
        inventory.kill()
        check(refuses_connections(inventory.port), f"port {inventory.port} still accepts")
        found = re.search(r" for (\S+) \((\w+)\)$", reserved)
        check(found is not None, f"unexpected line of the inventory service: {reserved!r}")
        assert found is not None
        self.lost_order, self.lost_reservation = found.groups()
        narrate(
            f"Payments go through. Inventory Update has just reserved {self.lost_order}'s "
            f"items ({self.lost_reservation}) when, before it can answer, the network to it "
            f"fails: its process (pid {inventory.pid}) is killed. Port {inventory.port} now "
            f"refuses connections. {self.lost_order}'s answer is lost; the requests that "
            "follow are refused.",
            "3. ",
        )

    def kill_the_worker(self) -> dict[str, OrderState]:
        worker = self.running.workers[-1]
        retry = self.shop.INVENTORY_RETRY
        # Each inventory update fails its attempt 1 at the outage, then waits out its
        # backoff in place, in a thread of worker 1: observed in the database (its attempt
        # recorded, the workflow owned), that is when worker 1 dies.
        states = self.wait_for_states(
            lambda s: s.inventory_attempts == 1, 30, "every order's attempt 1 to fail"
        )
        code = worker.kill()
        check(code == -signal.SIGKILL, f"worker 1 exited with {code}, expected -9")
        held_before = [oid for oid, s in states.items() if s.owner is not None]
        narrate(
            "Every inventory update fails: attempt 1, refused or cut off. shop.INVENTORY_RETRY "
            f"waits {retry.initial_interval} s before the next attempt, in place (shorter than "
            "the worker's suspend_after of 1 s), so worker 1 holds each workflow meanwhile. "
            f"Seeing worker 1 own {len(held_before)} of them in perdure's database, the demo "
            f"kills it (pid {worker.pid}) with SIGKILL: no cleanup, no goodbye, like a crash "
            "or a pulled plug.",
            "4. ",
        )
        # Nothing changes in the database until the next worker starts: this is exact.
        at_kill = self.outage_states()
        narrate(f"Worker 1 killed (exit code {code}). What perdure's database says now:", "   ")
        self.table(at_kill)
        for oid, s in at_kill.items():
            check(s.status == "RUNNING", f"{oid} is {s.status} at the kill, expected RUNNING")
            check("authorize_payment" in s.done, f"{oid}'s payment is not recorded: {s.done}")
            check(s.inventory_attempts == 1, f"{oid} has {s.inventory_attempts} attempts, not 1")
        held = [oid for oid, s in at_kill.items() if s.owner is not None]
        if held:
            others = len(at_kill) - len(held)
            rest = (
                f" The other {others} had already suspended, waiting for their next probe."
                if others
                else ""
            )
            paragraph(
                f"Worker 1 held {len(held)} of the {ORDER_COUNT} workflows when it died "
                f"({', '.join(held)}), in the middle of their retry: the kill interrupted them. "
                "The database still names worker 1 as their owner: a worker on another machine "
                "would take them over once worker 1's lease on them ran out (lease_seconds after "
                "its last heartbeat); one on this machine sees at once that worker 1's process "
                f"is gone.{rest}",
                "       ",
                "       ",
            )
        else:
            paragraph(
                f"Worker 1 held none of the {ORDER_COUNT} workflows when it died: all had "
                "suspended already, waiting for their next probe, so the kill interrupted "
                "nothing (this machine was slow to look).",
                "       ",
                "       ",
            )
        return at_kill

    def take_over(self, at_kill: dict[str, OrderState]) -> dict[str, OrderState]:
        worker = self.running.start_worker()
        narrate(
            f"Started worker 2 (pid {worker.pid}). It finds worker 1's process gone, releases "
            "the workflows worker 1 held, claims them and replays them from their checkpoints: "
            "intake and payment return their recorded results without calling the services "
            "again, and the inventory update, its attempt 1 recorded as failed, goes on to "
            "wait for the probe.",
            "5. ",
        )
        worker.wait_ready()

        def on_the_probe(oid: str, s: OrderState) -> bool:
            return (
                "authorize_payment" in s.done
                and s.inventory_attempts == 1
                and s.on_the_probe
                and self.output.probes_by(worker.name, oid) >= 1
            )

        seen: dict[str, OrderState] = {}

        def all_on_the_probe() -> bool:
            seen.update(self.outage_states())
            return all(on_the_probe(oid, s) for oid, s in seen.items())

        # A lease runs out at the latest lease_seconds after worker 1's last heartbeat.
        lease = self.shop.app.settings.lease_seconds
        self.wait_for(all_on_the_probe, lease + 30, "worker 2 to take over every order")
        retry = self.shop.INVENTORY_RETRY
        narrate(
            "Every inventory update has failed once (attempt 1), and perdure has not tried "
            "again: shop.INVENTORY_RETRY is "
            f'Retry(max_attempts={retry.max_attempts}, wait_for=health_probe("inventory"), '
            "...), so the next attempt waits for a probe of Inventory Update's GET /health "
            "to pass, and while it fails no attempt runs and none is counted. Between probes "
            "each workflow is suspended: no worker holds a thread for it (owner: none), and it "
            "is probed again "
            f"after {retry.probe_interval} s, then every {retry.probe_max_interval} s. "
            "What perdure's database says:",
            "   ",
        )
        self.table(seen)
        status = self.client.retrieve(self.order_ids[0]).status()
        step = next(s for s in status.steps if s.name == "update_inventory")
        first = self.order_ids[0]
        say(f"       {first}'s status().waiting_for: {status.waiting_for!r}")
        say(f"       its update_inventory step's waiting_for: {step.waiting_for!r}")
        paragraph(
            "Meanwhile the shop's front end shows each customer the status the workflow "
            'published (app.get_event(order_id, "status")):',
            "       ",
            "       ",
        )
        for oid in self.order_ids:
            event = self.client.get_event(oid, "status")
            say(f"       {oid} ({self.orders[oid]['customer']}): {event!r}")
            expected = self.shop.PAYMENT_RECEIVED
            check(event == expected, f"{oid}'s status is {event!r}, expected {expected!r}")
        return dict(seen)

    def keep_probing(self, before: dict[str, OrderState]) -> None:
        worker = self.running.workers[-1]

        # Twice each, so that worker 2 is seen to go on probing on the recorded backoff.
        def probed_again(oid: str, s: OrderState) -> bool:
            return (
                self.output.probes_by(worker.name, oid) >= 2
                and s.on_the_probe
                and s.probe_failures > before[oid].probe_failures
            )

        seen: dict[str, OrderState] = {}

        def all_probed_again() -> bool:
            seen.update(self.outage_states())
            return all(probed_again(oid, s) for oid, s in seen.items())

        self.wait_for(all_probed_again, 20, "worker 2 to probe every order again")
        narrate(
            "Worker 2 goes on probing on the recorded backoff; its probes are refused, twice "
            "for each order by now: the outage is not over. Still one attempt per order; each "
            "workflow is suspended again until its next probe:",
            "6. ",
        )
        self.table(seen)
        for oid, s in seen.items():
            check(s.inventory_attempts == 1, f"{oid} has {s.inventory_attempts} attempts, not 1")

    def bring_inventory_back(self) -> dict[str, Any]:
        inventory = self.running.restart("inventory")
        kept = {r["reservation_id"] for r in inventory.get("/reservations")}
        check(
            self.lost_reservation in kept,
            f"the restarted service lost {self.lost_order}'s reservation {self.lost_reservation}",
        )
        narrate(
            f"Inventory Update is back: restarted (pid {inventory.pid}) on the same port, "
            f"{inventory.port}, with its state file, which still holds {self.lost_order}'s "
            "reservation. At each order's next probe GET /health answers: the probe passes, "
            "and attempt 2 of the inventory update runs and gets through.",
            "7. ",
        )
        receipts = {}
        for oid, handle in self.handles.items():
            try:
                receipts[oid] = handle.result(timeout=30)
            except Exception as exc:
                raise DemoFailed(f"{oid} did not complete: {type(exc).__name__}: {exc}") from exc
        # The workers' lines are read by other threads: give them a moment to catch up.
        self.wait_for(
            lambda: all(oid in self.output.passed for oid in self.order_ids),
            10,
            "worker 2 to log every passed probe",
        )
        for oid in self.order_ids:
            name, _, attempt = self.output.passed[oid]
            check(
                name == "worker 2" and attempt == 2,
                f"{oid}'s probe passed in {name} before attempt {attempt}, expected "
                "worker 2 and attempt 2",
            )
        narrate("Every order completed:", "   ")
        for oid, receipt in receipts.items():
            status = self.client.get_event(oid, "status")
            say(
                f"       {oid}: {receipt.confirmation}, {dollars(receipt.amount_cents)} charged "
                f"as {receipt.charge_id}, stock reserved as {receipt.reservation_id}; "
                f"status {status!r}"
            )
            check(status == self.shop.CONFIRMED, f"{oid}'s final status is {status!r}")
        return receipts

    def prove(self, receipts: dict[str, Any]) -> None:
        """Check the outcome against the services' own records, and sum it up."""
        services = self.running.services
        say()
        say("Summary")
        say("-------")
        final = self.states()
        check(
            all(s.status == "SUCCEEDED" for s in final.values()),
            f"not every workflow SUCCEEDED: { {oid: s.status for oid, s in final.items()} }",
        )
        charges = services["payment"].get("/charges")
        per_order = Counter(c["order_id"] for c in charges)
        say("Payment Authorization's record of charges:")
        for oid in self.order_ids:
            check(per_order[oid] == 1, f"{oid} was charged {per_order[oid]} times")
            charge = next(c for c in charges if c["order_id"] == oid)
            check(
                charge["charge_id"] == receipts[oid].charge_id,
                f"{oid}: the service's charge {charge['charge_id']} is not the workflow's",
            )
            asked = "asked once" if charge["requests"] == 1 else f"asked {charge['requests']} times"
            say(
                f"    {oid}: 1 charge, {dollars(charge['amount_cents'])} "
                f"(key {charge['idempotency_key']}, {asked})"
            )
        paragraph(
            f"-> exactly one charge per order ({len(charges)} charges for {ORDER_COUNT} "
            "orders), across the outage, the retries and the crash.",
            "    ",
            "       ",
        )

        taken = sorted((o["order_id"], o["requests"]) for o in services["intake"].get("/orders"))
        check(
            taken == [(oid, 1) for oid in sorted(self.order_ids)],
            f"Order Intake was asked {taken}, expected once per order",
        )
        reservations = services["inventory"].get("/reservations")
        reserved = Counter(r["order_id"] for r in reservations)
        check(
            reserved == dict.fromkeys(self.order_ids, 1),
            f"reservations per order: {dict(reserved)}, expected one each",
        )
        lost = next(r for r in reservations if r["order_id"] == self.lost_order)
        check(
            lost["reservation_id"] == receipts[self.lost_order].reservation_id
            and lost["reservation_id"] == self.lost_reservation
            and lost["requests"] == 2,
            f"{self.lost_order}'s retry did not get its first reservation back: {lost}",
        )
        ordered: Counter[str] = Counter()
        for order in self.orders.values():
            for item in order["items"]:
                ordered[item["sku"]] += item["quantity"]
        stock = services["inventory"].get("/stock")
        expected = {sku: count - ordered[sku] for sku, count in self.stock_before.items()}
        check(stock == expected, f"the stock is {stock}, expected {expected}")
        emails = sorted(e["order_id"] for e in services["confirmation"].get("/confirmations"))
        check(emails == sorted(self.order_ids), f"e-mails sent for {emails}, expected one each")
        for oid, s in final.items():
            check(
                s.inventory_attempts == 2,
                f"{oid}'s inventory update took {s.inventory_attempts} attempts, expected 2: "
                "one before the outage, one once the probe passed",
            )
            logged = sum(n for (_, order), n in self.output.failed_attempts.items() if order == oid)
            check(logged == 1, f"the workers logged {logged} failed attempts of {oid}, expected 1")
        paragraph(
            "Order Intake: asked once per order (worker 2 did not take the orders again). "
            f"Inventory Update: one reservation per order; {self.lost_order}'s, made just "
            "before the outage, was requested twice with the same key (attempt 1, whose answer "
            "was lost, and attempt 2) and taken once. The stock went down by exactly the "
            f"{sum(ordered.values())} items ordered. Order Confirmation: one e-mail per order."
        )
        retry = self.shop.INVENTORY_RETRY
        probes = ", ".join(f"{oid} {self.output.passed[oid][1]}" for oid in self.order_ids)
        count = self.output.hidden_probes
        hidden = f" (the lines of {count} of them are not shown above)" if count else ""
        paragraph(
            "Attempts of each inventory update: 2 per order (of the "
            f"{retry.max_attempts} that shop.INVENTORY_RETRY allows): attempt 1 failed at the "
            "outage, attempt 2 ran once the probe passed. Failed probes during the outage, "
            f"which used no attempt: {probes}{hidden}. No customer saw an error: they were "
            'told "payment received, your order will be confirmed shortly", then "confirmed".'
        )
        paragraph(f"Total time: {elapsed():.1f} s.")
        say()

    def stop(self) -> None:
        code = self.running.workers[-1].terminate(timeout=20)
        check(code == 0, f"worker 2 exited with code {code} after SIGTERM, expected 0")
        for service in self.running.services.values():
            service.terminate(timeout=10)
        pids = self.running.pids()
        left = [pid for pid in pids if _running(pid)]
        check(not left, f"processes still running: {left}")
        narrate(
            f"Stopped worker 2 with SIGTERM (exit code 0) and the services. All {len(pids)} "
            f"processes the demo started have exited (pids {', '.join(map(str, pids))}).",
            "8. ",
        )


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the PID now belongs to another user's process
        return False
    return True


def run(workdir: Path, output: Output) -> None:
    database_url = f"sqlite:///{workdir / 'perdure.db'}"
    # The client app reads its database from the environment when shop is imported.
    os.environ["PERDURE_DATABASE_URL"] = database_url
    import shop

    say("perdure demo: a checkout across four services, through a network outage and a crash")
    say("=" * 84)
    paragraph(
        "The checkout workflow (examples/checkout/shop.py) calls four services over HTTP, in "
        "order: " + ", ".join(TITLES.values()) + ". Each call is a step, checkpointed when it "
        f"returns, here in a fresh SQLite file ({database_url}). Lines starting with | are "
        "the processes' own output.",
        "",
        "",
    )
    say()
    with cluster(workdir, database_url, output, LATENCY) as running:
        Demo(running, shop, output).run()


def main() -> int:
    # SIGTERM to the demo unwinds through the finally clauses, like Ctrl-C does.
    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    workdir = Path(tempfile.mkdtemp(prefix="perdure-checkout-"))
    try:
        run(workdir, Output())
        return 0
    except (DemoFailed, ClusterError) as exc:
        say(f"\nDEMO FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("\nInterrupted: the processes the demo started are stopped.")
        return 130
    except Exception as exc:
        say(f"\nDEMO FAILED: {type(exc).__name__}: {exc}")
        raise
    finally:
        shop = sys.modules.get("shop")
        if shop is not None:
            shop.app.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
