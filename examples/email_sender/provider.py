"""The third party: an e-mail provider's HTTP API, with the limits such APIs impose.

``POST /send`` takes ``{"customer": ..., "to": ..., "subject": ...}`` and answers
``{"id": "msg-17"}`` after a short while (delivery takes time). Like real providers it
allows at most ``RATE`` requests in any second: one more is answered ``429 Too Many
Requests``. It also notes how many sends of one customer's account were in flight at
once (a provider may lock an account's sending reputation per request; two at once
is what the sender promised never to do). Served with ``_support.LocalServer``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import Any

from fastapi import FastAPI, HTTPException

#: The provider's limit: requests per second.
RATE = 5
#: Seconds a delivery takes.
LATENCY = 0.15


class Provider:
    """The provider's state: what it sent, when, and how its limits were met."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.rejected = 0
        self.peak_per_customer = 0
        self._recent: deque[float] = deque()
        self._in_flight: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self.api = FastAPI(title="mail provider")
        self.api.post("/send")(self.send)

    def send(self, message: dict[str, str]) -> dict[str, str]:
        customer = message["customer"]
        with self._lock:
            now = time.monotonic()
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            if len(self._recent) >= RATE:
                self.rejected += 1
                raise HTTPException(429, "Too Many Requests: at most 5 per second")
            self._recent.append(now)
            self._in_flight[customer] += 1
            self.peak_per_customer = max(self.peak_per_customer, self._in_flight[customer])
        time.sleep(LATENCY)
        with self._lock:
            self._in_flight[customer] -= 1
            number = len(self.sent) + 1
            self.sent.append({**message, "at": time.time(), "id": f"msg-{number}"})
        return {"id": f"msg-{number}"}
