"""Aggregator: ``python examples/aggregator/main.py``.

Sales events for two stores go to one aggregator workflow per store (totals.py); one
event is delivered twice, as a retried webhook would. The totals each aggregator
publishes count every sale once, and both aggregators stay alive, suspended until the
next event.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, for _support

import totals
from _support import run_id, say, scratch_folder, wait_for

app = totals.app

#: The stores of this run: each store's name is its aggregator's workflow ID.
PARIS, LYON = run_id("store-paris"), run_id("store-lyon")
#: (store, amount, event ID) of each sale, in the order they happen.
SALES = [(PARIS if n % 3 else LYON, 10 + n, f"sale-{n}") for n in range(1, 13)]
#: A sale delivered a second time (its sender timed out waiting for the ack, and retried).
REDELIVERED = SALES[2]


def expected() -> dict[str, totals.Totals]:
    """What the aggregators must end with: each sale counted once."""
    result: dict[str, totals.Totals] = {}
    for store, amount, _ in SALES:
        before = result.get(store, totals.Totals())
        result[store] = totals.Totals(before.total + amount, before.count + 1)
    return result


def run() -> dict[str, totals.Totals]:
    """Send the sales (one twice), wait until every one is counted, return the totals."""
    for n, (store, amount, event_id) in enumerate(SALES):
        totals.record(store, amount, event_id)
        if n == 3:
            store, amount, event_id = REDELIVERED
            totals.record(store, amount, event_id)
            say(f"{event_id} ({amount} EUR at {store}) is delivered a second time")
    say(f"{len(SALES) + 1} deliveries sent for {len(SALES)} sales")
    return {store: follow(store, want.count) for store, want in expected().items()}


def follow(store: str, count: int) -> totals.Totals:
    """The store's totals once they count ``count`` events, narrated. Events are handled
    in order, so these are the totals of the first ``count`` events the aggregator
    received: a duplicate among them would show in the total."""

    def counted() -> bool:
        return (totals.read(store) or totals.Totals()).count >= count

    wait_for(counted, 30, f"{store}'s aggregator to count {count} events")
    result = totals.read(store) or totals.Totals()
    say(f"{store}: {result.count} sales, {result.total} EUR")

    # Nothing left to handle: the aggregator suspends until the next event.
    handle = app.retrieve(store)
    wait_for(lambda: handle.status().suspended, 30, f"{store}'s aggregator to suspend")
    status = handle.status()
    say(f"  its aggregator is {status.status}, suspended, waiting for a {status.waiting_for}")
    say(
        f"  its history holds {len(status.steps)} records after {count} events; it "
        f"continued as new {totals.generation(store)}x so far (every {totals.BATCH} events)"
    )
    return result


def main() -> None:
    with scratch_folder("aggregator"), app:
        run()


if __name__ == "__main__":
    main()
