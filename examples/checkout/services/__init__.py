"""The four services of the checkout, each a small FastAPI app with its own SQLite file.

- ``intake``: Order Intake records an order and prices it from its catalog.
- ``payment``: Payment Authorization charges a card, idempotent on the caller's key.
- ``inventory``: Inventory Update reserves stock in the warehouse, idempotent too.
- ``confirmation``: Order Confirmation e-mails the customer.

Run one with ``python -m services NAME --port PORT --state-dir DIR`` from
``examples/checkout``: it serves on 127.0.0.1:PORT with uvicorn and keeps its state
in ``DIR/NAME.db``, so that a restarted service finds its state again. Every service
answers ``GET /health`` and lists its records with a ``GET`` on its collection, which
is how the demo checks, for instance, that each order was charged once.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

#: The services, in the order a checkout calls them.
NAMES = ("intake", "payment", "inventory", "confirmation")

#: What the narration calls them.
TITLES = {
    "intake": "Order Intake",
    "payment": "Payment Authorization",
    "inventory": "Inventory Update",
    "confirmation": "Order Confirmation",
}


@contextmanager
def transaction(path: Path, schema: str) -> Iterator[sqlite3.Connection]:
    """A connection to the service's database inside one write transaction.

    ``BEGIN IMMEDIATE`` takes the write lock at once, so that two concurrent requests
    with the same idempotency key can't both see it missing and both act on it.
    """
    with closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        conn.executescript(schema)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def rows(path: Path, schema: str, sql: str) -> list[dict[str, Any]]:
    """The rows of a read-only query, as dicts (what the ``GET`` listings return)."""
    with transaction(path, schema) as conn:
        return [dict(row) for row in conn.execute(sql)]


def announce(text: str) -> None:
    """One line of the service's own narration (the demo prefixes it with the service)."""
    print(text, file=sys.stdout, flush=True)
