"""Order Intake: records an order and prices it from the catalog.

``POST /orders`` with ``{"order_id", "customer", "items": [{"sku", "quantity"}]}``
answers with the priced order. It is idempotent on the order ID: the same order
again is recorded once. ``GET /orders`` lists the orders taken.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from . import announce, rows, transaction

#: SKU -> price in cents.
CATALOG = {"mug": 1200, "t-shirt": 2500, "stickers": 400, "hoodie": 5900, "cap": 1800}

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    items TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""


class Item(BaseModel):
    sku: str
    quantity: int


class OrderRequest(BaseModel):
    order_id: str
    customer: str
    items: list[Item]


class Order(BaseModel):
    order_id: str
    customer: str
    items: list[Item]
    amount_cents: int


def create_app(state_dir: Path, latency: float = 0.0) -> FastAPI:
    """The intake service, its orders in ``state_dir/intake.db``."""
    app = FastAPI(title="Order Intake")
    db = state_dir / "intake.db"

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"service": "intake"}

    @app.post("/orders")
    def take(request: OrderRequest) -> Order:
        unknown = sorted({item.sku for item in request.items} - CATALOG.keys())
        if unknown or not request.items or any(item.quantity < 1 for item in request.items):
            raise HTTPException(422, f"{request.order_id}: bad items (unknown: {unknown})")
        amount = sum(CATALOG[item.sku] * item.quantity for item in request.items)
        items = json.dumps([item.model_dump() for item in request.items])
        with transaction(db, SCHEMA) as conn:
            requests = conn.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (order_id) DO UPDATE SET requests = requests + 1 "
                "RETURNING requests",
                (request.order_id, request.customer, items, amount, time.time()),
            ).fetchone()[0]
        if requests == 1:
            count = sum(item.quantity for item in request.items)
            announce(
                f"order {request.order_id} from {request.customer}: {count} item(s), "
                f"${amount / 100:,.2f}"
            )
        time.sleep(latency)  # the answer takes its time to come back
        return Order(
            order_id=request.order_id,
            customer=request.customer,
            items=request.items,
            amount_cents=amount,
        )

    @app.get("/orders")
    def orders() -> list[dict[str, Any]]:
        return rows(db, SCHEMA, "SELECT * FROM orders ORDER BY created_at")

    return app
