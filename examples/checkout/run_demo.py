"""``make demo``: a checkout across four services, through a network outage and a crash.

1. Start the four services (each its own uvicorn process, port and SQLite file) and a
   worker process (``python -m perdure worker shop:app``).
2. A client places five orders: each starts a ``checkout`` workflow.
3. Once the first payment is authorized, the Inventory Update service goes down: its
   process is killed, and its port refuses connections.
4. Every payment is authorized, every inventory update fails and is retried; the
   customers are told "payment received, your order will be confirmed shortly".
5. The worker is killed with SIGKILL during the outage; a new worker takes over and
   keeps retrying.
6. Inventory Update comes back on the same port with its state; every order completes.
7. Check the services' own records: one charge, one reservation and one e-mail per
   order, and the stock down by exactly what was ordered. Stop everything.

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
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import Cluster, ClusterError, cluster, refuses_connections  # noqa: E402
from services import TITLES  # noqa: E402

CUSTOMERS = ("ada", "grace", "alan", "edsger", "barbara")
SKUS = ("mug", "t-shirt", "stickers", "hoodie", "cap")
ORDER_COUNT = 5
#: Seconds each service takes to answer. The warehouse's second keeps any reservation
#: from getting through before the outage, which begins at the first charge.
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
                    f"{message.strip(chr(39) + chr(34))}; next attempt in {wait}"
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


def states(client: Any, order_ids: list[str]) -> dict[str, OrderState]:
    return {oid: order_state(client, oid) for oid in order_ids}


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, cluster: Cluster | None = None
) -> None:
    """Poll until ``condition`` holds; fail the demo after ``timeout`` seconds, or as soon
    as a worker that should be running has exited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if cluster is not None and cluster.workers and not cluster.workers[-1].alive:
            raise DemoFailed(f"{cluster.workers[-1].name} exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


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


def run(workdir: Path, output: Output) -> None:
    database_url = f"sqlite:///{workdir / 'perdure.db'}"
    # The client reads its database from the environment when shop is imported.
    os.environ["PERDURE_DATABASE_URL"] = database_url
    import shop

    client = shop.app  # never launched: this process only starts workflows and reads them
    order_ids = [f"order-{n}" for n in range(1, ORDER_COUNT + 1)]
    orders = {oid: make_order(n) for n, oid in enumerate(order_ids, start=1)}

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
        # 1. the services and a worker
        running.start_services()
        narrate("Started the four services, each a FastAPI app in its own uvicorn process:", "1. ")
        for name, service in running.services.items():
            title = TITLES[name]
            say(f"       {title:<22} {service.url:<23} pid {service.pid:<7} state {name}.db")
        worker1 = running.start_worker()
        narrate(f"Started worker 1 (pid {worker1.pid}): python -m perdure worker shop:app", "   ")
        worker1.wait_ready()

        # 2. orders
        narrate(
            f"A client places {ORDER_COUNT} orders. Placing an order records a checkout "
            "workflow in the database; the worker picks it up and runs it.",
            "2. ",
        )
        handles = {}
        for oid in order_ids:
            handles[oid] = client.start(shop.checkout, orders[oid], workflow_id=oid)
        inventory = running.services["inventory"]
        stock_before = inventory.get("/stock")

        # 3. the outage, as soon as the first card is charged: from then on no reservation
        # can get through (each takes the warehouse a second), and every order meets it.
        charged = running.services["payment"].wait_for_output("charged ", timeout=30)
        inventory.kill()
        check(
            refuses_connections(inventory.port),
            f"port {inventory.port} still accepts connections",
        )
        narrate(
            f"Payment Authorization has charged {charged.split()[1]}, and Inventory Update "
            "comes next, when the network to that service fails: its process "
            f"(pid {inventory.pid}) is killed. Port {inventory.port} now refuses connections.",
            "3. ",
        )

        # 4. every payment goes through, every inventory update fails and is retried
        def all_waiting_for_inventory() -> bool:
            return all(
                "authorize_payment" in s.done and s.inventory_attempts >= 1
                for s in states(client, order_ids).values()
            )

        wait_for(all_waiting_for_inventory, 20, "every order to reach the outage", running)
        narrate(
            "Every payment is authorized, and every inventory update fails; perdure records "
            f"each failure and retries with a backoff (shop.INVENTORY_RETRY: up to "
            f"{shop.INVENTORY_RETRY.max_attempts} attempts, waits growing from "
            f"{shop.INVENTORY_RETRY.initial_interval} s to {shop.INVENTORY_RETRY.max_interval} "
            "s). Meanwhile the shop's front end shows each customer the status the workflow "
            'published (app.get_event(order_id, "status")):',
            "4. ",
        )
        for oid in order_ids:
            status = client.get_event(oid, "status")
            say(f"       {oid} ({orders[oid]['customer']}): {status!r}")
            check(
                status == shop.PAYMENT_RECEIVED,
                f"{oid}'s status during the outage is {status!r}, expected "
                f"{shop.PAYMENT_RECEIVED!r}",
            )

        # 5. the worker dies during the outage
        narrate(
            f"Killing worker 1 (pid {worker1.pid}) with SIGKILL in the middle of the outage: "
            "no cleanup, no goodbye, like a crash or a pulled plug.",
            "5. ",
        )
        code = worker1.kill()
        check(code == -signal.SIGKILL, f"worker 1 exited with {code}, expected -9")
        at_kill = states(client, order_ids)
        narrate(f"Worker 1 killed (exit code {code}). What perdure's database says now:", "   ")
        say(f"       {'order':<9} {'workflow':<10} {'completed steps':<34} update_inventory")
        for oid, s in at_kill.items():
            check(s.status == "RUNNING", f"{oid} is {s.status} at the kill, expected RUNNING")
            wait = f", next in {max(s.next_attempt_in or 0.0, 0.0):.1f} s"
            retrying = f"{s.inventory_attempts} failed attempt(s){wait}"
            say(f"       {oid:<9} {s.status:<10} {', '.join(s.done):<34} {retrying}")

        # 6. a new worker takes over and keeps retrying
        worker2 = running.start_worker()
        narrate(
            f"Started worker 2 (pid {worker2.pid}). It sees that worker 1's process is gone and "
            f"takes its {ORDER_COUNT} workflows over at once. Each resumes from its checkpoints: "
            "intake and payment return their recorded results without calling the services "
            "again, and the inventory update goes on with its recorded attempt count and "
            "backoff.",
            "6. ",
        )
        worker2.wait_ready()

        def worker2_retried() -> bool:
            now = states(client, order_ids)
            return all(now[oid].inventory_attempts > at_kill[oid].inventory_attempts for oid in now)

        wait_for(worker2_retried, 20, "worker 2 to retry every inventory update", running)
        narrate("Worker 2's attempts are refused too: the outage is not over.", "   ")

        # 7. the service comes back
        inventory = running.restart("inventory")
        stock_after = inventory.get("/stock")
        check(stock_after == stock_before, f"stock changed across the restart: {stock_after}")
        narrate(
            f"Inventory Update is back: restarted (pid {inventory.pid}) on the same port, "
            f"{inventory.port}, with its state file; the stock is as it was before the outage. "
            "The next attempt of each inventory update gets through.",
            "7. ",
        )
        receipts = {}
        for oid in order_ids:
            try:
                receipts[oid] = handles[oid].result(timeout=30)
            except Exception as exc:
                raise DemoFailed(f"{oid} did not complete: {type(exc).__name__}: {exc}") from exc
        narrate("Every order completed:", "   ")
        for oid, receipt in receipts.items():
            status = client.get_event(oid, "status")
            say(
                f"       {oid}: {receipt.confirmation}, {dollars(receipt.amount_cents)} charged "
                f"as {receipt.charge_id}, stock reserved as {receipt.reservation_id}; "
                f"status {status!r}"
            )
            check(status == shop.CONFIRMED, f"{oid}'s final status is {status!r}")

        # 8. the proof, from the services' own records
        say()
        say("Summary")
        say("-------")
        final = states(client, order_ids)
        check(
            all(s.status == "SUCCEEDED" for s in final.values()),
            f"not every workflow SUCCEEDED: { {oid: s.status for oid, s in final.items()} }",
        )
        charges = running.services["payment"].get("/charges")
        per_order = Counter(c["order_id"] for c in charges)
        say("Payment Authorization's record of charges:")
        for oid in order_ids:
            mine = [c for c in charges if c["order_id"] == oid]
            check(per_order[oid] == 1, f"{oid} was charged {per_order[oid]} times")
            charge = mine[0]
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
        taken = running.services["intake"].get("/orders")
        check(
            sorted((o["order_id"], o["requests"]) for o in taken)
            == [(oid, 1) for oid in sorted(order_ids)],
            f"Order Intake was asked {[(o['order_id'], o['requests']) for o in taken]}, "
            "expected once per order: a checkpointed step ran again",
        )
        reservations = running.services["inventory"].get("/reservations")
        reserved = Counter(r["order_id"] for r in reservations)
        check(
            all(reserved[oid] == 1 for oid in order_ids) and len(reservations) == ORDER_COUNT,
            f"reservations per order: {dict(reserved)}, expected one each",
        )
        ordered: Counter[str] = Counter()
        for order in orders.values():
            for item in order["items"]:
                ordered[item["sku"]] += item["quantity"]
        stock_final = running.services["inventory"].get("/stock")
        expected = {sku: count - ordered[sku] for sku, count in stock_before.items()}
        check(stock_final == expected, f"stock is {stock_final}, expected {expected}")
        emails = running.services["confirmation"].get("/confirmations")
        check(
            sorted(e["order_id"] for e in emails) == sorted(order_ids),
            f"confirmation e-mails: {[e['order_id'] for e in emails]}, expected one per order",
        )
        attempts = {oid: s.inventory_attempts for oid, s in final.items()}
        paragraph(
            "Order Intake: asked once per order (worker 2 did not take the orders again). "
            "Inventory Update: one reservation per order; the stock went down by exactly the "
            f"{sum(ordered.values())} items ordered. Order Confirmation: one e-mail per order."
        )
        paragraph(
            "Attempts of each inventory update until it got through: "
            + ", ".join(f"{oid} {n}" for oid, n in attempts.items())
            + f" ({output.hidden_failures} failed attempts not shown above). No customer saw "
            'an error: they were told "payment received, your order will be confirmed '
            'shortly", then "confirmed".'
        )
        paragraph(f"Total time: {time.monotonic() - _started:.1f} s.")
        say()

        # 9. stop everything
        code = worker2.terminate(timeout=20)
        check(code == 0, f"worker 2 exited with code {code} after SIGTERM, expected 0")
        for service in running.services.values():
            service.terminate(timeout=10)
        pids = running.pids()
        gone = [pid for pid in pids if not _running(pid)]
        check(gone == pids, f"processes still running: {sorted(set(pids) - set(gone))}")
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
