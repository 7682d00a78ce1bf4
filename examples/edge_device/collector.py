"""The collector: the HTTP service that edge devices upload their readings to.

``POST /readings`` stores a reading under its ``Idempotency-Key`` header, in a SQLite
file: a key it already has is acknowledged again (``"duplicate"``) and stored nothing,
so a device may resend a reading as often as it likes. ``GET /readings`` lists what
it holds.

To show why that matters, it can lose acknowledgements: for each key in
``lose_ack_for``, the first upload is stored but answered ``504``, as when a flaky
link drops the response on its way back. The device can't tell that from a failed
upload, so it sends the reading again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Collection, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel


class ReadingIn(BaseModel):
    device: str
    seq: int
    value: float
    taken_at: datetime


class Collector:
    """The service (``api``, a FastAPI app) on its SQLite file, and a log of what it did."""

    def __init__(self, path: Path, lose_ack_for: Collection[str] = ()) -> None:
        self.path = path
        self.lose_ack_for = set(lose_ack_for)
        #: One line per upload received, in order.
        self.log: list[str] = []
        self._lock = threading.Lock()
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS readings (key TEXT PRIMARY KEY, device TEXT, "
                "seq INTEGER, value REAL, taken_at TEXT, received INTEGER DEFAULT 1)"
            )
        self.api = FastAPI(title="collector")
        self.api.post("/readings")(self.receive)
        self.api.get("/readings")(self.readings)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path)
        try:
            with db:  # one transaction
                yield db
        finally:
            db.close()

    def receive(self, reading: ReadingIn, idempotency_key: str = Header()) -> dict[str, str]:
        # A plain def: FastAPI runs it in a thread, where the blocking sqlite3 calls belong.
        with self._lock, self._db() as db:
            # A known key keeps its first reading; only the count of receptions goes up.
            (received,) = db.execute(
                "INSERT INTO readings (key, device, seq, value, taken_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET received = received + 1 RETURNING received",
                (
                    idempotency_key,
                    reading.device,
                    reading.seq,
                    reading.value,
                    reading.taken_at.isoformat(),
                ),
            ).fetchone()
        if received > 1:
            self.log.append(f"{idempotency_key}: already stored, acknowledged again")
            return {"status": "duplicate"}
        if idempotency_key in self.lose_ack_for:
            self.log.append(f"{idempotency_key}: stored, but the acknowledgement is lost")
            raise HTTPException(504, "gateway timeout")
        self.log.append(f"{idempotency_key}: stored ({reading.value})")
        return {"status": "stored"}

    def readings(self) -> list[dict[str, Any]]:
        """Every reading stored, with how many times it was received."""
        with self._db() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM readings ORDER BY device, seq").fetchall()
        return [dict(row) for row in rows]
