"""An edge device that loses its link: ``python examples/edge_device/main.py``.

The collector (collector.py) is a real HTTP service on a local port. The device
(device.py) takes twelve readings and uploads each. After the first upload the link
goes down: the collector's port refuses connections, and the device goes on taking
readings while their uploads back off and retry. When the link is back, the queued
readings sync, one of them twice (its first acknowledgement is lost), and the
collector ends with every reading exactly once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, for _support

import device
from _support import LocalServer, run_id, say, scratch_folder, show_logs, wait_for
from collector import Collector

from perdure import WorkflowHandle

DEVICE = "sensor-7"
READINGS = 12
INTERVAL = 0.2
#: The reading whose first acknowledgement the collector loses.
LOST_ACK = f"{DEVICE}-9"


@dataclass
class Outcome:
    """What happened, for the narration and for the example's test."""

    summary: dict[str, int]
    #: What the collector holds at the end, in order of sequence number.
    stored: list[dict[str, Any]]
    #: The attempts of each upload that needed more than one.
    retried: list[int]


class Narrator:
    """Prints what the collector did since the last look."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.seen = 0

    def __call__(self) -> None:
        log = list(self.collector.log)
        for line in log[self.seen :]:
            say(f"  [collector] {line}")
        self.seen = len(log)


def uploads(handle: WorkflowHandle[dict[str, int]]) -> dict[str, int]:
    """How many uploads are in each state (SUCCEEDED, RETRYING) right now."""
    counts: dict[str, int] = {}
    for step in handle.status().steps:
        if step.name == "upload":
            counts[step.status] = counts.get(step.status, 0) + 1
    return counts


def run(workdir: Path) -> Outcome:
    """Run the scenario in ``workdir`` (the current folder), narrating it."""
    collector = Collector(workdir / "collector.db", lose_ack_for={LOST_ACK})
    narrate = Narrator(collector)
    with LocalServer(collector.api, "collector") as link:
        os.environ["COLLECTOR_URL"] = link.url
        say(f"Collector up on {link.url}")
        handle = device.app.start(
            device.edge_device, DEVICE, READINGS, INTERVAL, workflow_id=run_id(DEVICE)
        )
        say(
            f"{DEVICE} starts ({handle.workflow_id}): {READINGS} readings, one every "
            f"{INTERVAL} s, each uploaded"
        )

        def synced(count: int) -> bool:
            narrate()
            return len(collector.log) >= count

        wait_for(lambda: synced(1), 30, "the first upload")
        say("The link goes down: connections to the collector are refused")
        link.stop()

        def backlog() -> bool:
            narrate()
            return uploads(handle).get("RETRYING", 0) >= 3

        wait_for(backlog, 30, "uploads to queue up while the link is down")
        say(f"Uploads waiting to retry: {uploads(handle).get('RETRYING', 0)}; still measuring")
        link.start()
        say("The link is back: the queued uploads go through on their next attempt")

        def finished() -> bool:
            narrate()
            return handle.status().done

        wait_for(finished, 60, "the device to finish")
        summary = handle.result(timeout=10)
        narrate()

    stored = collector.readings()
    retried = [s.attempts for s in handle.status().steps if s.name == "upload" and s.attempts > 1]
    say(f"Device: {summary}; {len(retried)} uploads needed several attempts")
    say(
        f"Collector: {len(stored)} readings for {READINGS} taken, sequence numbers "
        f"{[r['seq'] for r in stored]}, received "
        f"{sum(r['received'] for r in stored)} times in all"
    )
    return Outcome(summary, stored, retried)


def main() -> None:
    show_logs()  # perdure logs each failed attempt and when the next one comes
    with scratch_folder("edge-device") as workdir, device.app:
        run(workdir)


if __name__ == "__main__":
    main()
