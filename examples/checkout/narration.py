"""The demo's narration: printing, the processes' output, and where each order stands.

``run_demo.py`` tells the story with ``say``, ``paragraph`` and ``narrate``; ``Output``
shows the lines the services and workers print and counts what the workers log about
the inventory updates; ``order_state`` reads an order's workflow from perdure's
database, as the tables of the demo show it.
"""

from __future__ import annotations

import re
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

#: The checkout workflow's steps, in order (shop.py).
STEPS = ("take_order", "authorize_payment", "update_inventory", "confirm_order")
WIDTH = 100

_print_lock = threading.Lock()
_started = time.monotonic()


def elapsed() -> float:
    """Seconds since the demo started."""
    return time.monotonic() - _started


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
    head = f"[{elapsed():4.1f}s] {label}"
    paragraph(text, head, " " * len(head))


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) ([\w.]+): (.*)$")
_RETRY = re.compile(
    r"workflow (\S+) step \S+ \((\w+)\) attempt (\d+) failed: (\w+)\((.*)\); next attempt in (.*)$"
)
_PROBE_FAILED = re.compile(
    r"workflow (\S+) step \S+ \((\w+)\): probe (.+?) failed \((.*)\); "
    r"attempt (\d+) waits for it to pass, next probe in (.*)$"
)
_PROBE_PASSED = re.compile(
    r"workflow (\S+) step \S+ \((\w+)\): probe (.+?) passed after (\d+) failure\(s\); "
    r"attempt (\d+) runs$"
)
#: How a step's ``waiting_for`` counts its failed probes.
_PROBE_FAILURES = re.compile(r"\(failed (\d+) time\(s\)\)$")


QUOTES = "'\""


class Output:
    """Prints the children's lines, indented and tagged with the process they come from,
    and counts what the workers log about the inventory updates.

    During the outage a worker logs a failed probe per order every two seconds, so only
    each worker's first one for each order is shown. The workers' httpx logs a line per
    request, which the services' own lines already say.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shown_probes: set[tuple[str, str]] = set()
        self.hidden_probes = 0
        #: (worker, order) -> failed attempts of update_inventory it logged
        self.failed_attempts: Counter[tuple[str, str]] = Counter()
        #: (worker, order) -> failed probes it logged
        self.failed_probes: Counter[tuple[str, str]] = Counter()
        #: order -> (worker, failed probes in all, the attempt that then ran)
        self.passed: dict[str, tuple[str, int, int]] = {}

    def __call__(self, name: str, line: str) -> None:
        match = _LOG.match(line)
        if match:
            level, logger, line = match.groups()
            if logger.startswith(("httpx", "httpcore")) and level == "INFO":
                return
            shown = self._worker_line(name, line)
            if shown is None:
                return
            if shown:
                line = shown
            elif level != "INFO":
                line = f"{level} {line}"
        say(f"    | [{name}] {line}")

    def _worker_line(self, name: str, line: str) -> str | None:
        """The line to show for a perdure log line about a step ("" for: as it is), or
        None to hide it."""
        retry = _RETRY.match(line)
        if retry:
            order_id, step, attempt, error, message, wait = retry.groups()
            with self._lock:
                self.failed_attempts[name, order_id] += 1
            return (
                f"{order_id} {step} attempt {attempt} failed: {error}: "
                f"{message.strip(QUOTES)}; next attempt in {wait}"
            )
        failed = _PROBE_FAILED.match(line)
        if failed:
            order_id, step, probe, why, attempt, wait = failed.groups()
            with self._lock:
                self.failed_probes[name, order_id] += 1
                if (name, order_id) in self._shown_probes:
                    self.hidden_probes += 1
                    return None
                self._shown_probes.add((name, order_id))
            return (
                f"{order_id} {step}: probe failed ({why}); attempt {attempt} waits for it, "
                f"next probe in {wait}"
            )
        passed = _PROBE_PASSED.match(line)
        if passed:
            order_id, step, probe, failures, attempt = passed.groups()
            with self._lock:
                self.passed[order_id] = (name, int(failures), int(attempt))
            return (
                f"{order_id} {step}: probe passed after {failures} failure(s); "
                f"attempt {attempt} runs"
            )
        return ""

    def probes_by(self, worker: str, order_id: str) -> int:
        with self._lock:
            return self.failed_probes[worker, order_id]


# -- reading the state ---------------------------------------------------------------------


@dataclass
class OrderState:
    """Where one order's workflow stands, as perdure's database says."""

    status: str
    owner: str | None  # the executor that runs it now; None while suspended
    waiting_for: str | None  # what the suspended workflow waits for (status().waiting_for)
    done: tuple[str, ...]  # the steps that completed, in order
    inventory_attempts: int  # attempts of update_inventory so far
    probe_failures: int  # failed probes of its retry so far (while it waits for the probe)
    next_probe_in: float | None  # seconds until its next probe

    @property
    def on_the_probe(self) -> bool:
        """Suspended (no executor holds it) until its next probe of the inventory service."""
        return (
            self.owner is None
            and self.waiting_for is not None
            and self.waiting_for.startswith("probe ")
            and self.probe_failures > 0
        )


def order_state(client: Any, order_id: str) -> OrderState:
    status = client.retrieve(order_id).status()
    steps = {s.name: s for s in status.steps if s.name in STEPS}
    done = tuple(name for name in STEPS if name in steps and steps[name].status == "SUCCEEDED")
    inventory = steps.get("update_inventory")
    attempts = failures = 0
    next_in = None
    if inventory is not None:
        attempts = inventory.attempts
        counted = _PROBE_FAILURES.search(inventory.waiting_for or "")
        failures = int(counted.group(1)) if counted else 0
        if counted and inventory.next_attempt_at is not None:
            next_in = inventory.next_attempt_at.timestamp() - time.time()
    return OrderState(
        status.status, status.owner, status.waiting_for, done, attempts, failures, next_in
    )
