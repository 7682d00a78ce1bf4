"""``make demo``: the checkout workflow, killed mid-way and resumed, narrated.

1. Start a worker process (``python -m perdure worker shop:app``).
2. A client places five orders: each starts a ``checkout`` workflow.
3. Once some payments are authorized and another is in flight, SIGKILL the worker.
4. Start a fresh worker: it resumes the interrupted workflows.
5. Wait for every result and check the outcome against the services' own records.
6. Stop the worker with SIGTERM (a graceful drain).

Everything lives in a fresh temporary folder, removed at the end. Every process
the demo starts is killed on the way out, also on Ctrl-C or an error. The exit
code is 0 when every check passed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
STEPS = ("order_intake", "authorize_payment", "update_inventory", "confirm_order")
CUSTOMERS = (
    "ada@example.com",
    "grace@example.com",
    "alan@example.com",
    "edsger@example.com",
    "barbara@example.com",
)
CATALOG = (("mug", 1200), ("t-shirt", 2500), ("stickers", 400), ("hoodie", 5900), ("cap", 1800))
ORDER_COUNT = 5
ORDER_GAP = 0.7  # seconds between two orders, so that they are at different steps at the kill
PAUSE = 2.0  # seconds with no worker running, to read the table
WIDTH = 100

_print_lock = threading.Lock()
_started = time.monotonic()


def say(text: str = "") -> None:
    """Print one line (the reader threads print the workers' lines too)."""
    with _print_lock:
        print(text, flush=True)


def elapsed() -> float:
    return time.monotonic() - _started


def narrate(text: str, label: str = "") -> None:
    """A paragraph of narration, stamped with the time since the demo started."""
    head = f"[{elapsed():4.1f}s] {label}"
    paragraph(text, head, " " * len(head))


def paragraph(text: str, first: str = "", rest: str = "    ") -> None:
    """Print ``text`` wrapped to the demo's width."""
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


class DemoFailed(Exception):
    """Something did not turn out as the demo expects."""


# -- workers -----------------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) [\w.]+: (.*)$")


@dataclass
class Worker:
    """One ``perdure worker`` subprocess, its output streamed with a prefix."""

    number: int
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "perdure", "worker", "shop:app"],
            cwd=HERE,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: Ctrl-C here doesn't reach it
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        for stream, is_log in ((self.process.stdout, False), (self.process.stderr, True)):
            reader = threading.Thread(target=self._stream, args=(stream, is_log), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _stream(self, stream: IO[str], is_log: bool) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            if is_log:
                match = _LOG_LINE.match(line)
                if match:
                    level, message = match.groups()
                    tag = "" if level == "INFO" else f"{level} "
                    if not message.startswith("perdure"):
                        tag += "perdure: "
                    line = f"[worker {self.pid}] {tag}{message}"
                elif line.startswith("perdure worker"):
                    if line.startswith("perdure worker running"):
                        self.ready.set()
                    line = f"[worker {self.pid}] {line}"
            say(f"    | {line}")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.alive is False:
                raise DemoFailed(f"worker {self.number} exited at start (code {self.exit_code})")
            if time.monotonic() > deadline:
                raise DemoFailed(f"worker {self.number} did not start within {timeout:.0f} s")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> int:
        """SIGKILL the worker's process group and reap it; returns its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        code = self.process.wait()
        self.join_readers()
        return code

    def terminate(self, timeout: float) -> int:
        """SIGTERM the worker (it drains and exits); returns its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise DemoFailed(
                f"worker {self.number} did not stop within {timeout:.0f} s of SIGTERM"
            ) from None
        self.join_readers()
        return code

    def join_readers(self) -> None:
        for reader in self.readers:
            reader.join(timeout=5)


# -- reading the state -------------------------------------------------------------------------


@dataclass
class OrderState:
    """One order's workflow as perdure reports it."""

    order_id: str
    status: str
    done_steps: tuple[str, ...]
    retrying: dict[str, int]  # step name -> failed attempts so far

    @property
    def next_step(self) -> str | None:
        return STEPS[len(self.done_steps)] if len(self.done_steps) < len(STEPS) else None


def order_state(app: Any, order_id: str) -> OrderState:
    status = app.retrieve(order_id).status()
    done = tuple(step.name for step in status.steps if step.status == "SUCCEEDED")
    retrying = {step.name: step.attempts for step in status.steps if step.status == "RETRYING"}
    return OrderState(order_id, status.status, done, retrying)


@contextlib.contextmanager
def services_db(path: str) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def charged_orders(path: str) -> set[str]:
    """Orders that the payments service has charged."""
    if not os.path.exists(path):
        return set()
    with services_db(path) as conn:
        try:
            return {row[0] for row in conn.execute("SELECT order_id FROM payments")}
        except sqlite3.OperationalError:  # the table doesn't exist yet
            return set()


@dataclass
class Call:
    order_id: str
    step: str
    pid: int
    finished: bool
    outcome: str | None


def service_calls(path: str) -> list[Call]:
    with services_db(path) as conn:
        rows = conn.execute(
            "SELECT order_id, step, pid, finished_at IS NOT NULL, outcome FROM service_calls "
            "ORDER BY id"
        ).fetchall()
    return [Call(o, s, p, bool(f), out) for o, s, p, f, out in rows]


def make_order(n: int) -> dict[str, Any]:
    """A small, varied order."""
    items = []
    for k in range(1 + n % 3):
        sku, price = CATALOG[(n + k) % len(CATALOG)]
        items.append({"sku": sku, "quantity": 1 + (n + k) % 2, "price_cents": price})
    return {
        "order_id": f"order-{n}",
        "customer": CUSTOMERS[(n - 1) % len(CUSTOMERS)],
        "items": items,
    }


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)


# -- the demo ----------------------------------------------------------------------------------


def run(workdir: Path, workers: list[Worker]) -> None:
    db_url = f"sqlite:///{workdir / 'perdure.db'}"
    services_path = str(workdir / "services.db")
    os.environ["PERDURE_DATABASE_URL"] = db_url
    os.environ["DEMO_SERVICES_DB"] = services_path
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    sys.path.insert(0, str(HERE))
    import shop  # noqa: E402 - reads the URLs set above

    client = shop.app  # never launched: this process only starts and watches workflows
    order_ids = [f"order-{n}" for n in range(1, ORDER_COUNT + 1)]

    say("perdure demo: an e-commerce checkout that survives a crash")
    say("=" * 58)
    paragraph(
        "The checkout workflow (examples/demo/shop.py) takes an order through four steps: "
        + ", ".join(STEPS)
        + ". Each step calls a (simulated) service and is checkpointed "
        f"when it completes, here in a fresh SQLite file, {workdir / 'perdure.db'}. "
        "Lines starting with | are the workers' own output.",
        "",
        "",
    )
    say()

    # 1. the first worker
    worker1 = Worker(1, env)
    workers.append(worker1)
    worker1.start()
    narrate(f"Started worker 1 (pid {worker1.pid}): python -m perdure worker shop:app", "1. ")
    worker1.wait_ready(timeout=20)

    # 2. the client places orders
    narrate(
        f"A client places {ORDER_COUNT} orders, one every {ORDER_GAP} s. Placing an order "
        "only records a checkout workflow in the database; the worker picks it up and "
        "runs it.",
        "2. ",
    )
    handles = {}
    for n, order_id in enumerate(order_ids, start=1):
        order = make_order(n)
        handles[order_id] = client.start(shop.checkout, order, workflow_id=order_id)
        count = sum(item["quantity"] for item in order["items"])
        narrate(f"client: placed {order_id} for {order['customer']} ({count} item(s))", "   ")
        if n < ORDER_COUNT:
            time.sleep(ORDER_GAP)

    # 3. wait until some payments are checkpointed and another charge is in flight, then kill
    deadline = time.monotonic() + 20
    while True:
        states = {oid: order_state(client, oid) for oid in order_ids}
        paid = [oid for oid, s in states.items() if "authorize_payment" in s.done_steps]
        charged = charged_orders(services_path)
        in_flight = [oid for oid in order_ids if oid in charged and oid not in paid]
        finished = [oid for oid, s in states.items() if s.status == "SUCCEEDED"]
        if finished and len(paid) >= 2 and in_flight:
            reason = (
                f"{' and '.join(finished)} completed, the payments of {', '.join(paid)} "
                f"are authorized and checkpointed, and {in_flight[0]}'s card has just "
                "been charged, but its payment step has not completed yet."
            )
            break
        if time.monotonic() > deadline:
            if len(finished) == ORDER_COUNT:
                raise DemoFailed("every order finished before the kill: nothing to resume")
            reason = f"the payments of {', '.join(paid) or 'no order'} are authorized."
            break
        if not worker1.alive:
            raise DemoFailed(f"worker 1 exited by itself (code {worker1.exit_code})")
        time.sleep(0.05)
    narrate(f"Now {reason}", "3. ")
    narrate(
        f"Killing worker 1 (pid {worker1.pid}) with SIGKILL: no cleanup, no goodbye, like "
        "a crash or a pulled plug.",
        "   ",
    )
    code = worker1.kill()
    killed_pid = worker1.pid
    narrate(f"Worker 1 killed (exit code {code}). No worker is running now.", "   ")

    # The database doesn't change until the next worker starts: this snapshot is exact.
    at_kill = {oid: order_state(client, oid) for oid in order_ids}
    calls = service_calls(services_path)
    charged = charged_orders(services_path)
    say()
    say("    What perdure's database says now:")
    say(f"    {'order':<9} {'workflow':<10} {'checkpointed':<14} step that was in flight")
    for oid in order_ids:
        state = at_kill[oid]
        flight = "-"
        step = state.next_step
        if step is not None:
            running = [c for c in calls if c.order_id == oid and c.step == step and not c.finished]
            if step in state.retrying:
                flight = f"{step} (attempt {state.retrying[step]} failed, waiting to retry)"
            elif running and step == "authorize_payment" and oid in charged:
                flight = f"{step} (was running: card charged, answer not back yet)"
            elif running:
                flight = f"{step} (was running)"
            elif any(c.order_id == oid and c.step == step for c in calls):
                flight = f"{step} (had finished, not yet checkpointed)"
            else:
                flight = f"{step} (about to start)"
        done = f"{len(state.done_steps)} of {len(STEPS)} steps"
        say(f"    {oid:<9} {state.status:<10} {done:<14} {flight}")
    unfinished = [oid for oid in order_ids if at_kill[oid].status != "SUCCEEDED"]
    say()
    time.sleep(PAUSE)

    # 4. a fresh worker resumes the interrupted workflows
    worker2 = Worker(2, env)
    workers.append(worker2)
    worker2.start()
    resumed_at = elapsed()
    narrate(
        f"Started worker 2 (pid {worker2.pid}). It sees that worker 1's process is gone "
        f"and takes over its {len(unfinished)} unfinished workflows at once (a worker on "
        "another host would wait for their leases to expire). Each one is resumed: it runs "
        "again from the top, the completed steps return their checkpointed results without "
        "running again, and the step that was in flight runs again.",
        "4. ",
    )
    worker2.wait_ready(timeout=20)

    # 5. the results
    results: dict[str, dict[str, Any]] = {}
    for oid in order_ids:
        try:
            results[oid] = handles[oid].result(timeout=30)
        except Exception as exc:
            raise DemoFailed(f"{oid} did not complete: {type(exc).__name__}: {exc}") from exc
    narrate("Every workflow has its result:", "5. ")
    for oid in order_ids:
        result = results[oid]
        say(
            f"       {oid}: {result['confirmation']}, {dollars(result['amount_cents'])} "
            f"charged as {result['charge_id']}, stock reserved as {result['reservation_id']}"
        )

    final = {oid: order_state(client, oid) for oid in order_ids}
    check(
        all(s.status == "SUCCEEDED" for s in final.values()),
        f"not every order succeeded: { {oid: s.status for oid, s in final.items()} }",
    )
    calls = service_calls(services_path)
    with services_db(services_path) as conn:
        ledger = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT order_id, count(*), sum(requests), group_concat(charge_id) "
                "FROM payments GROUP BY order_id"
            )
        }

    say()
    say("Summary")
    say("-------")
    paragraph(
        f"All {ORDER_COUNT} orders completed; {len(unfinished)} of them were resumed by "
        "worker 2 after the crash."
    )
    say("Payments ledger (the payments service's own record):")
    for oid in order_ids:
        charges, requests, charge_ids = ledger.get(oid, (0, 0, ""))
        asked = "asked once" if requests == 1 else f"asked {requests} times with the same key"
        say(f"    {oid}: {charges} charge ({asked})")
        check(charges == 1, f"{oid} was charged {charges} times, expected exactly once")
        check(
            charge_ids == results[oid]["charge_id"],
            f"{oid}: the ledger's charge {charge_ids} is not the workflow's",
        )
    paragraph(
        f"-> one charge per order ({len(ledger)} charges for {ORDER_COUNT} orders): a payment "
        "requested again is answered from the ledger, thanks to the idempotency key that the "
        "workflow derives from its ID.",
        "    ",
        "       ",
    )

    # Which steps ran again after the crash, and were they exactly the ones in flight?
    new_pid = worker2.pid
    rerun = sorted(
        {(c.order_id, c.step) for c in calls if c.pid == new_pid}
        & {(c.order_id, c.step) for c in calls if c.pid == killed_pid}
    )
    checkpointed = {(oid, step) for oid, s in at_kill.items() for step in s.done_steps}
    repeated = sorted(checkpointed & {(c.order_id, c.step) for c in calls if c.pid == new_pid})
    check(not repeated, f"steps that were checkpointed ran again after the crash: {repeated}")
    expected_rerun = sorted(
        (oid, s.next_step)
        for oid, s in at_kill.items()
        if s.next_step is not None
        and any(c.order_id == oid and c.step == s.next_step and c.pid == killed_pid for c in calls)
    )
    check(
        rerun == expected_rerun,
        f"steps run again {rerun} are not the steps in flight at the kill {expected_rerun}",
    )
    names = ", ".join(f"{oid} {step}" for oid, step in rerun) or "none"
    paragraph(
        f"Steps that ran twice: {len(rerun)} of {ORDER_COUNT * len(STEPS)} ({names}): exactly "
        f"those in flight when worker 1 was killed. The {len(checkpointed)} steps checkpointed "
        "before the kill did not run again."
    )
    if any(step == "confirm_order" for _, step in rerun):
        paragraph(
            "(The confirmation e-mail in flight may have gone out twice: a step runs at least "
            "once, so a step with an outside effect should be idempotent, like the payment.)",
            "    ",
        )
    for c in calls:
        if c.outcome not in (None, "ok"):
            paragraph(
                f"Retried: {c.order_id} {c.step} failed once ({c.outcome}); perdure recorded "
                "the failure and ran the step again after its backoff."
            )
    paragraph(
        f"Total time: {elapsed():.1f} s, including a {PAUSE:.0f} s pause with no worker running. "
        f"Worker 2 finished the interrupted orders {elapsed() - resumed_at:.1f} s after it "
        "started."
    )
    say()

    # 6. stop the worker gracefully
    narrate(
        "Stopping worker 2 with SIGTERM: it stops claiming work, lets running workflows "
        "finish, and exits.",
        "6. ",
    )
    code = worker2.terminate(timeout=20)
    check(code == 0, f"worker 2 exited with code {code} after SIGTERM, expected 0")
    narrate(
        f"Worker 2 exited with code 0. Both workers (pids {killed_pid} and {new_pid}) are "
        "gone; the demo is over.",
        "   ",
    )


def main() -> int:
    # SIGTERM to the demo: unwind through the finally clauses like Ctrl-C does.
    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    workdir = Path(tempfile.mkdtemp(prefix="perdure-demo-"))
    workers: list[Worker] = []
    try:
        run(workdir, workers)
        return 0
    except DemoFailed as exc:
        say(f"\nDEMO FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("\nInterrupted: stopping the workers the demo started.")
        return 130
    finally:
        for worker in workers:
            if worker.process is not None and worker.alive:
                worker.kill()
        shop = sys.modules.get("shop")
        if shop is not None:
            shop.app.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
