"""Async HTTP API: ``python examples/async_http_api/main.py``.

Serves service.py's API with uvicorn on a free local port, then plays its client with
httpx: POST a report request (202 and a Location), poll the status URL while the
workflow reports its progress, read the result; and retry the POST with the same
Idempotency-Key, which finds the same job instead of starting another.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, for _support

import httpx
import service
from _support import LocalServer, run_id, say, scratch_folder

REGIONS = ["north", "south", "east", "west"]


@dataclass
class Outcome:
    """What the client saw, for the narration and for the example's test."""

    status_url: str
    #: Every distinct body the status URL answered while the job ran, in order.
    progress: list[dict[str, Any]]
    final: dict[str, Any]
    #: The status URL that a retried POST (same Idempotency-Key) got.
    retried_status_url: str


def describe(progress: dict[str, Any] | None) -> str:
    if not progress:
        return ""
    now = f", querying {progress['now']}" if progress["now"] else ""
    return f": {progress['done']} of {progress['of']} regions done{now}"


def run(base_url: str, key: str = run_id("sales-2026-q1")) -> Outcome:
    """Be the API's client: start a report, follow it to its result. The
    Idempotency-Key names this request (of this run): a retry of it finds its job."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        created = client.post(
            "/reports", json={"regions": REGIONS}, headers={"Idempotency-Key": key}
        )
        assert created.status_code == 202, created.text
        status_url = created.headers["Location"]
        say(f"POST /reports -> {created.status_code} Accepted, Location: {status_url}")

        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while True:
            body = client.get(status_url).raise_for_status().json()
            if not seen or body != seen[-1]:
                seen.append(body)
                say(f"GET {status_url} -> {body['status']}{describe(body.get('progress'))}")
            if body["status"] not in ("PENDING", "RUNNING"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{status_url} still {body['status']} after 30s")
            time.sleep(0.1)  # a real client would wait Retry-After seconds
        say(f"The status URL now holds the result: {body.get('result') or body.get('error')}")

        again = client.post("/reports", json={"regions": REGIONS}, headers={"Idempotency-Key": key})
        say(
            f"POST again with Idempotency-Key {key} -> {again.status_code}, "
            f"Location: {again.headers['Location']} (the same job, not a new one)"
        )
        return Outcome(status_url, seen, body, again.headers["Location"])


def main() -> None:
    with scratch_folder("async-http-api"), LocalServer(service.api, "sales-api") as server:
        say(f"API serving on {server.url} (uvicorn; it also runs the workflows)")
        run(server.url)


if __name__ == "__main__":
    main()
