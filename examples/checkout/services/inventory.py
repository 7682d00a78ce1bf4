"""Inventory Update: reserves an order's items in the warehouse, once per idempotency key.

``POST /reservations`` with ``{"idempotency_key", "order_id", "items": [{"sku",
"quantity"}]}`` takes the items off the stock and answers with the reservation; the
same key again takes nothing and answers with the first reservation. ``GET /stock``
shows what is left, ``GET /reservations`` every reservation. The stock starts at
``INITIAL_STOCK`` the first time the service runs; a restarted service keeps its
state (its SQLite file).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from . import announce, rows, transaction

INITIAL_STOCK = {"mug": 40, "t-shirt": 40, "stickers": 40, "hoodie": 40, "cap": 40}

# Seeding is part of the schema: it runs on every connection and only fills an empty table.
_SEED = "".join(
    f"INSERT OR IGNORE INTO stock VALUES ('{sku}', {count});\n"
    for sku, count in INITIAL_STOCK.items()
)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    idempotency_key TEXT PRIMARY KEY,
    reservation_id TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL,
    items TEXT NOT NULL,
    requests INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""
    + _SEED
)


class Item(BaseModel):
    sku: str
    quantity: int


class ReservationRequest(BaseModel):
    idempotency_key: str
    order_id: str
    items: list[Item]


class Reservation(BaseModel):
    reservation_id: str
    order_id: str
    requests: int


def create_app(state_dir: Path, latency: float = 0.0) -> FastAPI:
    """The inventory service, its stock and reservations in ``state_dir/inventory.db``."""
    app = FastAPI(title="Inventory Update")
    db = state_dir / "inventory.db"

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"service": "inventory"}

    @app.post("/reservations")
    def reserve(request: ReservationRequest) -> Reservation:
        with transaction(db, SCHEMA) as conn:
            row = conn.execute(
                "UPDATE reservations SET requests = requests + 1 WHERE idempotency_key = ? "
                "RETURNING reservation_id, order_id, requests",
                (request.idempotency_key,),
            ).fetchone()
            if row is None:
                for item in request.items:
                    taken = conn.execute(
                        "UPDATE stock SET on_hand = on_hand - ? WHERE sku = ? AND on_hand >= ?",
                        (item.quantity, item.sku, item.quantity),
                    ).rowcount
                    if not taken:
                        # Raising rolls back what earlier items took.
                        raise HTTPException(409, f"{request.order_id}: not enough {item.sku}")
                row = conn.execute(
                    "INSERT INTO reservations VALUES (?, ?, ?, ?, 1, ?) "
                    "RETURNING reservation_id, order_id, requests",
                    (
                        request.idempotency_key,
                        f"res_{uuid.uuid4().hex[:8]}",
                        request.order_id,
                        json.dumps([item.model_dump() for item in request.items]),
                        time.time(),
                    ),
                ).fetchone()
        result = Reservation(**dict(row))
        if result.requests == 1:
            skus = ", ".join(f"{item.quantity} x {item.sku}" for item in request.items)
            announce(f"reserved {skus} for {result.order_id} ({result.reservation_id})")
        else:
            announce(
                f"key {request.idempotency_key} again (request #{result.requests}): "
                f"nothing taken, answered with {result.reservation_id}"
            )
        # Recorded first, answered later: a service killed in between has reserved the
        # items but never said so. The caller's retry, with the same key, gets this
        # reservation back and takes nothing more.
        time.sleep(latency)
        return result

    @app.get("/stock")
    def stock() -> dict[str, int]:
        return {
            row["sku"]: row["on_hand"]
            for row in rows(db, SCHEMA, "SELECT sku, on_hand FROM stock ORDER BY sku")
        }

    @app.get("/reservations")
    def reservations() -> list[dict[str, Any]]:
        return rows(db, SCHEMA, "SELECT * FROM reservations ORDER BY created_at")

    return app
