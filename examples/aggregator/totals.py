"""Aggregator: one long-lived workflow per key, fed events as messages, keeping a total.

Each key (a store, an account, a sensor) gets one ``aggregate`` workflow whose ID is
the key. Events reach it as messages (``record``: start the workflow if it isn't
running yet, then ``app.send``), each with an idempotency key, so an event delivered
twice counts once. The workflow publishes its running totals with
``perdure.set_event``; anyone reads them with ``app.get_event`` (``read``).

Its history grows with every message it handles (a recorded ``recv`` and a recorded
``set_event``), and a workflow replays its history when it wakes. So it handles
messages in batches, and after each batch starts afresh with its state as its
argument (``perdure.continue_as_new``), keeping the history to one batch. What is
kept outside the history carries over: the published totals, the messages not
handled yet, and the idempotency keys of the messages sent to it (they belong to the
workflow ID), so an event delivered again after a restart still counts once.
"""

from __future__ import annotations

from dataclasses import dataclass

import perdure

app = perdure.App()  # PERDURE_DATABASE_URL, or ./perdure.db

#: Messages one run handles before it starts afresh.
BATCH = 5


@dataclass
class Totals:
    total: int = 0
    count: int = 0


@app.workflow
def aggregate(totals: Totals) -> Totals:
    """Add up the amounts sent to this key, forever: one batch per run."""
    for _ in range(BATCH):
        # Waits as long as it takes: the workflow is suspended, holding nothing,
        # until a message arrives. Each message is delivered once, in order.
        event = perdure.recv("event")
        totals = Totals(totals.total + event["amount"], totals.count + 1)
        perdure.set_event("totals", totals)
    # continue_as_new: this run ends, and a fresh one starts under the same ID from
    # `totals`, with an empty history. It never returns: the aggregator runs until
    # cancelled (app.cancel).
    perdure.continue_as_new(totals)


def record(key: str, amount: int, event_id: str) -> None:
    """Add ``amount`` to ``key``'s total, once per ``event_id``.

    Starting is idempotent on the workflow ID: the first event of a key starts its
    aggregator, the next ones find it running. Sending is idempotent on the event ID.
    """
    app.start(aggregate, Totals(), workflow_id=key)
    app.send(key, {"amount": amount}, topic="event", idempotency_key=event_id)


def generation(key: str) -> int:
    """How many times ``key``'s aggregator has started afresh. (The workflow's record
    counts it; ``WorkflowStatus`` does not show it yet, so this reads the store.)"""
    record = app.store.get_workflow(key)
    return 0 if record is None else record.generation


def read(key: str, timeout: float = 0.0) -> Totals | None:
    """The totals ``key``'s aggregator last published (None before its first event)."""
    published = app.get_event(key, "totals", timeout=timeout)
    return None if published is None else Totals(**published)
