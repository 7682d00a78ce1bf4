"""An edge device that takes readings locally and syncs them when its link is up.

``edge_device`` takes a reading every ``interval`` seconds. Each reading is a step:
once taken it is recorded on the device (its SQLite file), so a reboot neither loses
it nor takes it again. Each reading is then uploaded to the collector by an
``upload`` step that runs beside the next readings (an asyncio task), so a dead link
never holds the sensor up. An upload that fails (connection refused, a lost
acknowledgement) is retried with exponential backoff until the link is back; its
idempotency key (device and sequence number) lets the collector store each reading
once however often it is sent.

The collector's URL comes from ``COLLECTOR_URL`` (collector.py, served by main.py).
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

import perdure

app = perdure.App()  # PERDURE_DATABASE_URL, or ./perdure.db

#: Generous: an upload keeps trying for about half a minute of outage. The wait doubles
#: from 0.2 s up to 1 s between attempts (a real device would go up to minutes).
UPLOAD_RETRY = perdure.Retry(
    max_attempts=30,
    initial_interval=0.2,
    backoff=2.0,
    max_interval=1.0,
    retry_on=(httpx.TransportError, httpx.HTTPStatusError),
)


@dataclass
class Reading:
    device: str
    seq: int
    value: float
    taken_at: datetime

    @property
    def key(self) -> str:
        """The idempotency key of its upload: the same on every attempt and after a reboot."""
        return f"{self.device}-{self.seq}"


@app.step
async def take_reading(device: str, seq: int) -> Reading:
    """Read the sensor (a temperature that follows a slow, deterministic wave)."""
    value = round(20 + 5 * math.sin(seq / 2), 2)
    return Reading(device, seq, value, datetime.now(timezone.utc))


@app.step(retry=UPLOAD_RETRY)
async def upload(reading: Reading) -> str:
    """Send one reading to the collector; "stored", or "duplicate" if it had it already."""
    body: dict[str, Any] = {
        "device": reading.device,
        "seq": reading.seq,
        "value": reading.value,
        "taken_at": reading.taken_at.isoformat(),
    }
    async with httpx.AsyncClient(base_url=os.environ["COLLECTOR_URL"], timeout=5) as client:
        response = await client.post(
            "/readings", json=body, headers={"Idempotency-Key": reading.key}
        )
        response.raise_for_status()
        status: str = response.json()["status"]
        return status


@app.workflow
async def edge_device(device: str, readings: int, interval: float) -> dict[str, int]:
    """Take ``readings`` readings, upload each; returns how many were taken and synced."""
    uploads: list[asyncio.Task[str]] = []
    for seq in range(readings):
        reading = await take_reading(device, seq)
        # The step takes its place in the workflow here, at the call; the task runs it
        # (and its retries) while the device goes on taking readings.
        uploads.append(asyncio.create_task(upload(reading)))
        await perdure.sleep_async(interval)
    acknowledged = await asyncio.gather(*uploads)
    return {"taken": readings, "synced": len(acknowledged)}
