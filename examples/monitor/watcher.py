"""The monitor: check a condition on a schedule, with durable timers, until it holds.

``watch_rollout`` asks a deployment's status endpoint (deployment.py) how far its
rollout has come, publishes what it saw with ``perdure.set_event`` (anyone reads it
with ``app.get_event``), and sleeps with ``perdure.sleep`` before the next check, until
the deployment reports "ready". An unreachable endpoint is an observation like any
other: the monitor notes it and checks again later.

Each check adds records to its history (the check, the published observation, the
timer), and a workflow replays its history whenever it wakes from a timer. A monitor
may run for days, so every ``CHECKS_PER_RUN`` checks it starts afresh with
``perdure.continue_as_new``: same workflow ID, its count of checks as argument, an
empty history. Its published observation and its deadline (``app.start(...,
timeout=...)``) carry over.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

import perdure

#: A real monitor sleeps minutes between checks, and is suspended meanwhile (no thread,
#: no memory). The demo sleeps a fraction of a second; this app suspends any wait over
#: 0.1 s (the default is 1 s), so that the demo's monitor is suspended between checks too.
app = perdure.App(suspend_after=0.1)  # PERDURE_DATABASE_URL, or ./perdure.db

#: Checks one run makes before it continues as new.
CHECKS_PER_RUN = 4
#: Records one check adds to the history: the check, the observation, the timer.
RECORDS_PER_CHECK = 3


@dataclass
class Observation:
    check: int
    state: str  # "rolling out", "ready", or "unreachable"
    ready: int = 0
    replicas: int = 0


@app.step
def check(url: str, number: int) -> Observation:
    """Ask the status endpoint once. A step: its answer is recorded, so a replay sees the
    same observation without asking again."""
    try:
        response = httpx.get(url, timeout=2.0)
        response.raise_for_status()
    except httpx.HTTPError:
        return Observation(number, "unreachable")
    body = response.json()
    return Observation(number, body["state"], body["ready"], body["replicas"])


@app.workflow
def watch_rollout(url: str, interval: float, checks: int = 0) -> Observation:
    """Check ``url`` every ``interval`` seconds until it reports "ready"; return that
    observation. ``checks``: how many checks earlier runs made."""
    for _ in range(CHECKS_PER_RUN):
        checks += 1
        seen = check(url, checks)
        perdure.set_event("last", seen)
        if seen.state == "ready":
            return seen
        perdure.sleep(interval)  # a durable timer: its wake time is recorded
    # This run ends here, and a fresh one starts from the top with an empty history.
    perdure.continue_as_new(url, interval, checks)


def last(workflow_id: str) -> Observation | None:
    """The monitor's last published observation (None before its first check)."""
    published = app.get_event(workflow_id, "last")
    return None if published is None else Observation(**published)


def generation(workflow_id: str) -> int:
    """How many times the monitor has continued as new. (The workflow's record counts
    it; ``WorkflowStatus`` does not show it yet, so this reads the store.)"""
    record = app.store.get_workflow(workflow_id)
    return 0 if record is None else record.generation
