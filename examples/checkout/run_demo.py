"""``make demo``: a checkout across four services, through a network outage and a crash.

1. Start the four services (each its own uvicorn process, port and SQLite file) and a
   worker process (``python -m perdure worker shop:app``).
2. A client places five orders: each starts a ``checkout`` workflow.
3. At the first stock reservation, before its answer is sent, the Inventory Update
   service goes down: its process is killed, and its port refuses connections.
4. Every payment is authorized, every inventory update fails and is retried; the
   customers are told "payment received, your order will be confirmed shortly".
5. The worker is killed with SIGKILL during the outage.
6. A new worker takes the orders over and keeps retrying.
7. Inventory Update comes back on the same port with its state; every order completes.
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
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import Cluster, ClusterError, cluster, refuses_connections  # noqa: E402
from services import TITLES  # noqa: E402

CUSTOMERS = ("ada", "grace", "alan", "edsger", "barbara")
SKUS = ("mug", "t-shirt", "stickers", "hoodie", "cap")
ORDER_COUNT = 5
#: Seconds each service takes to answer once it has done its work. The warehouse's
#: second lets the outage, which begins at the first reservation, catch every order.
LATENCY = {"intake": 0.1, "payment": 0.3, "inventory": 1.0, "confirmation": 0.2}
STEPS = ("take_order", "authorize_payment", "update_inventory", "confirm_order")
WIDTH = 100

_print_lock = threading.Lock()
_started = time.monotonic()


class DemoFailed(Exception):
    """Something did not turn out as the demo expects."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)


# -- printing ------------------------------------------------------------------------------


def say(text: str = "") -> None:
    """Print one line (the reader threads print the processes' lines too)."""
    with _print_lock:
        print(text, flush=True)


def paragraph(text: str, first: str = "", rest: str = "    ") -> None:
    say(
        textwrap.fill(
            text,
            WIDTH,
            initial_indent=first,
            subsequent_indent=rest,
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


def narrate(text: str, label: str = "") -> None:
    """A paragraph stamped with the time since the demo started."""
    head = f"[{time.monotonic() - _started:4.1f}s] {label}"
    paragraph(text, head, " " * len(head))


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) ([\w.]+): (.*)$")
_RETRY = re.compile(
    r"workflow (\S+) step \S+ \((\w+)\) attempt (\d+) failed: (\w+)\((.*)\); next attempt in (.*)$"
)


QUOTES = "'\""


class Output:
    """Prints the children's lines, indented and tagged with the process they come from.

    A worker logs every failed attempt; during the outage that is one line per order
    every two seconds, so only each worker's first failure of each order is shown. The
    workers' httpx logs a line per request, which the services' own lines already say.
    """

    def __init__(self) -> None:
        self._shown_failures: set[tuple[str, str]] = set()
        self.hidden_failures = 0

    def __call__(self, name: str, line: str) -> None:
        match = _LOG.match(line)
        if match:
            level, logger, line = match.groups()
            if logger.startswith(("httpx", "httpcore")) and level == "INFO":
                return
            retry = _RETRY.match(line)
            if retry:
                order_id, step, attempt, error, message, wait = retry.groups()
                if (name, order_id) in self._shown_failures:
                    self.hidden_failures += 1
                    return
                self._shown_failures.add((name, order_id))
                line = (
                    f"{order_id} {step} attempt {attempt} failed: {error}: "
                    f"{message.strip(QUOTES)}; next attempt in {wait}"
                )
            elif level != "INFO":
                line = f"{level} {line}"
        say(f"    | [{name}] {line}")


# -- reading the state ---------------------------------------------------------------------


@dataclass
class OrderState:
    """Where one order's workflow stands, as perdure's database says."""

    status: str
    done: tuple[str, ...]  # the steps that completed, in order
    inventory_attempts: int  # failed attempts of update_inventory so far (or all, once done)
    next_attempt_in: float | None


def order_state(client: Any, order_id: str) -> OrderState:
    status = client.retrieve(order_id).status()
    steps = {s.name: s for s in status.steps if s.name in STEPS}
    done = tuple(name for name in STEPS if name in steps and steps[name].status == "SUCCEEDED")
    inventory = steps.get("update_inventory")
    next_in = None
    if inventory is not None and inventory.next_attempt_at is not None:
        next_in = inventory.next_attempt_at.timestamp() - time.time()
    attempts = inventory.attempts if inventory is not None else 0
    return OrderState(status.status, done, attempts, next_in)


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
            time.sleep(0.02)

    def run(self) -> None:
        self.start()
        self.place_orders()
        self.cut_inventory_off()
        self.show_the_customers()
        at_kill = self.kill_the_worker()
        self.take_over(at_kill)
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

    def show_the_customers(self) -> None:
        def all_retrying() -> bool:
            return all(
                "authorize_payment" in s.done and s.inventory_attempts >= 1
                for s in self.states().values()
            )

        self.wait_for(all_retrying, 20, "every order to reach the outage")
        retry = self.shop.INVENTORY_RETRY
        narrate(
            "Every payment is authorized, and every inventory update fails; perdure records "
            "each failure and retries with a backoff (shop.INVENTORY_RETRY: up to "
            f"{retry.max_attempts} attempts, waits growing from {retry.initial_interval} s to "
            f"{retry.max_interval} s). Meanwhile the shop's front end shows each customer "
            'the status the workflow published (app.get_event(order_id, "status")):',
            "4. ",
        )
        for oid in self.order_ids:
            status = self.client.get_event(oid, "status")
            say(f"       {oid} ({self.orders[oid]['customer']}): {status!r}")
            expected = self.shop.PAYMENT_RECEIVED
            check(status == expected, f"{oid}'s status is {status!r}, expected {expected!r}")

    def kill_the_worker(self) -> dict[str, OrderState]:
        worker = self.running.workers[-1]
        narrate(
            f"Killing worker 1 (pid {worker.pid}) with SIGKILL in the middle of the outage: "
            "no cleanup, no goodbye, like a crash or a pulled plug.",
            "5. ",
        )
        code = worker.kill()
        check(code == -signal.SIGKILL, f"worker 1 exited with {code}, expected -9")
        # Nothing changes in the database until the next worker starts: this is exact.
        at_kill = self.states()
        narrate(f"Worker 1 killed (exit code {code}). What perdure's database says now:", "   ")
        say(f"       {'order':<9} {'workflow':<10} {'completed steps':<34} update_inventory")
        for oid, s in at_kill.items():
            check(s.status == "RUNNING", f"{oid} is {s.status} at the kill, expected RUNNING")
            retrying = (
                f"{s.inventory_attempts} failed attempt(s), "
                f"next in {max(s.next_attempt_in or 0.0, 0.0):.1f} s"
            )
            say(f"       {oid:<9} {s.status:<10} {', '.join(s.done):<34} {retrying}")
        return at_kill

    def take_over(self, at_kill: dict[str, OrderState]) -> None:
        worker = self.running.start_worker()
        narrate(
            f"Started worker 2 (pid {worker.pid}). It sees that worker 1's process is gone and "
            f"takes its {ORDER_COUNT} workflows over at once. Each resumes from its "
            "checkpoints: intake and payment return their recorded results without calling "
            "the services again, and the inventory update goes on with its recorded attempt "
            "count and backoff.",
            "6. ",
        )
        worker.wait_ready()

        def all_retried() -> bool:
            now = self.states()
            return all(now[oid].inventory_attempts > at_kill[oid].inventory_attempts for oid in now)

        self.wait_for(all_retried, 20, "worker 2 to retry every inventory update")
        narrate("Worker 2's attempts are refused too: the outage is not over.", "   ")

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
            "reservation. The next attempt of each inventory update gets through.",
            "7. ",
        )
        receipts = {}
        for oid, handle in self.handles.items():
            try:
                receipts[oid] = handle.result(timeout=30)
            except Exception as exc:
                raise DemoFailed(f"{oid} did not complete: {type(exc).__name__}: {exc}") from exc
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
            and lost["requests"] >= 2,
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
        paragraph(
            "Order Intake: asked once per order (worker 2 did not take the orders again). "
            f"Inventory Update: one reservation per order; {self.lost_order}'s, made just "
            f"before the outage, was requested {lost['requests']} times with the same key and "
            "taken once. The stock went down by exactly the "
            f"{sum(ordered.values())} items ordered. Order Confirmation: one e-mail per order."
        )
        paragraph(
            "Attempts of each inventory update until it got through: "
            + ", ".join(f"{oid} {s.inventory_attempts}" for oid, s in final.items())
            + f" ({self.output.hidden_failures} failed attempts not shown above). No customer "
            'saw an error: they were told "payment received, your order will be confirmed '
            'shortly", then "confirmed".'
        )
        paragraph(f"Total time: {time.monotonic() - _started:.1f} s.")
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
