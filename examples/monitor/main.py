"""Monitor: ``python examples/monitor/main.py``.

A deployment's status endpoint (deployment.py) is served on a local port while v2 rolls
out to four replicas; the monitor (watcher.py) checks it every 0.2 s, sleeping on a
durable timer in between, until it reports "ready". This script plays the rollout: a
replica comes up after the monitor has seen the previous count twice, and halfway the
status service restarts (the monitor notes it as unreachable and goes on). Every four
checks the monitor continues as new, so its history never holds more than four checks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, for _support

import watcher
from _support import LocalServer, run_id, say, scratch_folder, wait_for
from deployment import Deployment

from perdure import WorkflowHandle

app = watcher.app

MONITOR_ID = run_id("rollout-v2")
REPLICAS = 4
#: Seconds between two checks (minutes, in real life).
INTERVAL = 0.2
#: The monitor gives up (fails with DeadlineExceededError) if not ready by then.
GIVE_UP_AFTER = 120.0
#: A replica comes up once the monitor has seen the previous count this many times.
CHECKS_PER_REPLICA = 2
#: The status service restarts once this many replicas are up.
RESTART_AT = 2


@dataclass
class Outcome:
    """What happened, for the narration and for the example's test."""

    result: watcher.Observation
    #: The observations this script saw published (it may miss some: it only looks).
    seen: list[watcher.Observation] = field(default_factory=list)
    #: The size of the monitor's history each time this script looked.
    history: list[int] = field(default_factory=list)
    generation: int = 0
    #: How many status requests the endpoint answered.
    requests: int = 0


class Follower:
    """Narrates each new observation the monitor publishes, with its history's size."""

    def __init__(self, handle: WorkflowHandle[watcher.Observation], outcome: Outcome) -> None:
        self.handle = handle
        self.outcome = outcome

    def look(self) -> None:
        last = watcher.last(self.handle.workflow_id)
        seen = self.outcome.seen
        if last is None or (seen and seen[-1].check == last.check):
            return
        seen.append(last)
        records = len(self.handle.status().steps)
        self.outcome.history.append(records)
        where = "" if last.state == "unreachable" else f" ({last.ready}/{last.replicas} up)"
        say(
            f"  check #{last.check}: {last.state}{where}  "
            f"[history: {records} records, generation {watcher.generation(MONITOR_ID)}]"
        )

    def until(self, condition: Callable[[list[watcher.Observation]], bool], what: str) -> None:
        def holds() -> bool:
            self.look()
            return condition(self.outcome.seen)

        wait_for(holds, 30, what)


def reported(ready: int) -> Callable[[list[watcher.Observation]], bool]:
    """Whether the monitor was seen reporting ``ready`` replicas ``CHECKS_PER_REPLICA``
    times."""

    def holds(seen: list[watcher.Observation]) -> bool:
        return sum(1 for o in seen if o.ready == ready) >= CHECKS_PER_REPLICA

    return holds


def run() -> Outcome:
    """Serve the status endpoint, start the monitor, play the rollout; narrated."""
    deployment = Deployment("v2", REPLICAS)
    with LocalServer(deployment.api, "deployment") as server:
        url = f"{server.url}/status"
        say(f"Deployment status on {url}: v2 rolling out to {REPLICAS} replicas")
        handle = app.start(
            watcher.watch_rollout, url, INTERVAL, workflow_id=MONITOR_ID, timeout=GIVE_UP_AFTER
        )
        say(
            f"Monitor {MONITOR_ID} started: a check every {INTERVAL} s, continue_as_new "
            f"every {watcher.CHECKS_PER_RUN} checks, gives up after {GIVE_UP_AFTER:g} s"
        )
        outcome = Outcome(watcher.Observation(0, ""))
        follow = Follower(handle, outcome)
        for replica in range(1, REPLICAS + 1):
            follow.until(reported(replica - 1), f"the monitor to see {replica - 1} replicas")
            if replica == RESTART_AT + 1:
                server.stop()
                say("The status service restarts: connections are refused")
                follow.until(lambda seen: seen[-1].state == "unreachable", "an unreachable check")
                server.start()
                say("The status service is back")
            deployment.advance()
            say(f"Rollout: replica {replica}/{REPLICAS} is up")
        follow.until(lambda seen: seen[-1].state == "ready", "the monitor to see ready")

        result = handle.result(timeout=30)
        outcome.result = result
        outcome.generation = watcher.generation(MONITOR_ID)
        status = handle.status()
        say(
            f"Monitor {status.status} after {result.check} checks: {result.state} "
            f"({result.ready}/{result.replicas} up)"
        )
        say(
            f"  it continued as new {outcome.generation}x; its history held at most "
            f"{max(outcome.history)} records (at most {watcher.CHECKS_PER_RUN} checks), "
            f"{len(status.steps)} at the end"
        )
        outcome.requests = deployment.requests
        say(
            f"  the status endpoint answered {deployment.requests} requests for {result.check} "
            "checks (those during the restart found it down): a monitor woken by its timer "
            "replays its recorded checks without asking again"
        )
    return outcome


def main() -> None:
    with scratch_folder("monitor"), app:
        run()


if __name__ == "__main__":
    main()
