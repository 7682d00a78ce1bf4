"""Order Confirmation: e-mails the customer that the order is confirmed, once per order.

``POST /confirmations`` with ``{"order_id", "customer", "charge_id",
"reservation_id"}`` sends the e-mail (here: records it) and answers with the
confirmation number; the same order again sends nothing more and answers with the
same number. ``GET /confirmations`` lists the e-mails sent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from . import announce, rows, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS confirmations (
    order_id TEXT PRIMARY KEY,
    confirmation TEXT NOT NULL UNIQUE,
    customer TEXT NOT NULL,
    charge_id TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    requests INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""


class ConfirmationRequest(BaseModel):
    order_id: str
    customer: str
    charge_id: str
    reservation_id: str


class Confirmation(BaseModel):
    confirmation: str
    order_id: str
    requests: int


def create_app(state_dir: Path, latency: float = 0.0) -> FastAPI:
    """The confirmation service, its e-mails in ``state_dir/confirmation.db``."""
    app = FastAPI(title="Order Confirmation")
    db = state_dir / "confirmation.db"

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"service": "confirmation"}

    @app.post("/confirmations")
    def confirm(request: ConfirmationRequest) -> Confirmation:
        with transaction(db, SCHEMA) as conn:
            (count,) = conn.execute("SELECT count(*) FROM confirmations").fetchone()
            row = conn.execute(
                "INSERT INTO confirmations VALUES (?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (order_id) DO UPDATE SET requests = requests + 1 "
                "RETURNING confirmation, order_id, requests",
                (
                    request.order_id,
                    f"CONF-{count + 1:04d}",
                    request.customer,
                    request.charge_id,
                    request.reservation_id,
                    time.time(),
                ),
            ).fetchone()
        result = Confirmation(**dict(row))
        if result.requests == 1:
            announce(
                f"{result.order_id} confirmed ({result.confirmation}): "
                f"e-mail sent to {request.customer}"
            )
        time.sleep(latency)  # the answer takes its time to come back
        return result

    @app.get("/confirmations")
    def confirmations() -> list[dict[str, Any]]:
        return rows(db, SCHEMA, "SELECT * FROM confirmations ORDER BY created_at")

    return app
