"""Payment Authorization: charges a card once per idempotency key.

``POST /charges`` with ``{"idempotency_key", "order_id", "amount_cents"}`` charges
the card and answers with the charge. The same key again charges nothing and answers
with the charge made the first time (``requests`` counts how often it was asked), so
a caller that retries, or runs again after a crash, never charges twice.
``GET /charges`` lists every charge: the demo's proof of one charge per order.
``POST /refunds`` with ``{"idempotency_key", "charge_id"}`` refunds a charge, once per
key (a refund asked again answers with the first); ``GET /refunds`` lists them.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from . import announce, rows, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    idempotency_key TEXT PRIMARY KEY,
    charge_id TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    idempotency_key TEXT PRIMARY KEY,
    refund_id TEXT NOT NULL UNIQUE,
    charge_id TEXT NOT NULL,
    requests INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""


class ChargeRequest(BaseModel):
    idempotency_key: str
    order_id: str
    amount_cents: int


class RefundRequest(BaseModel):
    idempotency_key: str
    charge_id: str


class Refund(BaseModel):
    refund_id: str
    charge_id: str
    requests: int


class Charge(BaseModel):
    charge_id: str
    order_id: str
    amount_cents: int
    requests: int


def create_app(state_dir: Path, latency: float = 0.0) -> FastAPI:
    """The payment service, its charges in ``state_dir/payment.db``."""
    app = FastAPI(title="Payment Authorization")
    db = state_dir / "payment.db"

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"service": "payment"}

    @app.post("/charges")
    def charge(request: ChargeRequest) -> Charge:
        with transaction(db, SCHEMA) as conn:
            conn.execute(
                "INSERT INTO charges VALUES (?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (idempotency_key) DO UPDATE SET requests = requests + 1",
                (
                    request.idempotency_key,
                    f"ch_{uuid.uuid4().hex[:10]}",
                    request.order_id,
                    request.amount_cents,
                    time.time(),
                ),
            )
            row = conn.execute(
                "SELECT charge_id, order_id, amount_cents, requests FROM charges "
                "WHERE idempotency_key = ?",
                (request.idempotency_key,),
            ).fetchone()
            if (row["order_id"], row["amount_cents"]) != (request.order_id, request.amount_cents):
                # A key reused for another payment is the caller's bug: never guess.
                raise HTTPException(
                    409, f"key {request.idempotency_key} was used for another charge"
                )
        result = Charge(**dict(row))
        dollars = f"${result.amount_cents / 100:,.2f}"
        if result.requests == 1:
            announce(f"charged {result.order_id} {dollars} as {result.charge_id}")
        else:
            announce(
                f"key {request.idempotency_key} again (request #{result.requests}): "
                f"no new charge, answered with {result.charge_id}"
            )
        time.sleep(latency)  # the answer takes its time to come back
        return result

    @app.get("/charges")
    def charges() -> list[dict[str, Any]]:
        return rows(db, SCHEMA, "SELECT * FROM charges ORDER BY created_at")

    @app.post("/refunds")
    def refund(request: RefundRequest) -> Refund:
        with transaction(db, SCHEMA) as conn:
            charged = conn.execute(
                "SELECT 1 FROM charges WHERE charge_id = ?", (request.charge_id,)
            ).fetchone()
            if charged is None:
                raise HTTPException(404, f"no charge {request.charge_id}")
            row = conn.execute(
                "INSERT INTO refunds VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT (idempotency_key) DO UPDATE SET requests = requests + 1 "
                "RETURNING refund_id, charge_id, requests",
                (
                    request.idempotency_key,
                    f"re_{uuid.uuid4().hex[:10]}",
                    request.charge_id,
                    time.time(),
                ),
            ).fetchone()
        result = Refund(**dict(row))
        if result.requests == 1:
            announce(f"refunded {result.charge_id} as {result.refund_id}")
        return result

    @app.get("/refunds")
    def refunds() -> list[dict[str, Any]]:
        return rows(db, SCHEMA, "SELECT * FROM refunds ORDER BY created_at")

    return app
