"""The service the monitor watches: a deployment's status endpoint.

``GET /status`` says how far the rollout of a new version has come:
``{"version": "v2", "replicas": 4, "ready": 1, "state": "rolling out"}``, and
``"state": "ready"`` once every replica is up. Here the rollout is played by main.py,
which brings replicas up one by one (``advance``); in real life it would be a
Kubernetes deployment, a database migration, a DNS change propagating.

Serve it with ``uvicorn`` (main.py serves it in a thread with ``_support.LocalServer``).
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI


class Deployment:
    """The rollout of ``version`` to ``replicas`` replicas, and its status endpoint."""

    def __init__(self, version: str, replicas: int) -> None:
        self.version = version
        self.replicas = replicas
        self.ready = 0
        #: How many times the status was asked for.
        self.requests = 0
        self._lock = threading.Lock()
        self.api = FastAPI(title="deployment")
        self.api.get("/status")(self.status)

    def status(self) -> dict[str, Any]:
        with self._lock:
            self.requests += 1
            state = "ready" if self.ready == self.replicas else "rolling out"
            return {
                "version": self.version,
                "replicas": self.replicas,
                "ready": self.ready,
                "state": state,
            }

    def advance(self) -> int:
        """One more replica is up; returns how many are."""
        with self._lock:
            self.ready = min(self.ready + 1, self.replicas)
            return self.ready
