"""A schedule every second, fired by three worker processes at once, on both stores.

The app is ``tests/schedule_app.py``. Three ``perdure worker`` processes run on a fresh
PostgreSQL schema and three on a SQLite file, side by side (the two fleets share the
15 seconds). From the store and the ledger the ticks' steps write, the test proves that
every tick in the window ran exactly once and none was missed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from ledger import wait_for

import perdure
from perdure.storage import Store, WorkflowRecord

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TESTS_DIR = Path(__file__).resolve().parent
WORKERS = 3
WINDOW = 15.0
NAME = "every_second"


def _tick(workflow_id: str) -> float:
    """The tick of a tick's workflow ID (``schedule:<name>:<ISO time>``)."""
    return datetime.fromisoformat(workflow_id.split(":", 2)[2]).timestamp()


class Fleet:
    """``WORKERS`` worker processes on one database, and a client app that only reads."""

    def __init__(self, kind: str, url: str, tmp_path: Path) -> None:
        self.kind = kind
        self.ledger = tmp_path / f"{kind}.jsonl"
        env = dict(os.environ)
        env["PERDURE_DATABASE_URL"] = url
        env["PERDURE_LEDGER"] = str(self.ledger)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.logs = [tmp_path / f"{kind}-{n}.err" for n in range(WORKERS)]
        self.procs = []
        for log in self.logs:
            with open(log, "wb") as err:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "perdure", "worker", "schedule_app:app"],
                        cwd=tmp_path,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        self.app = perdure.App(url)

    @property
    def store(self) -> Store:
        return self.app.store

    def assert_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            code = proc.poll()
            assert code is None, f"{self.kind} worker exited with {code}:\n{log.read_text()}"

    def running_executors(self) -> int:
        self.assert_alive()
        return sum(1 for e in self.store.list_executors() if e.stopped_at is None)

    def ticks(self) -> list[WorkflowRecord]:
        return self.store.list_workflows(name=NAME, limit=1000, newest_first=False)

    def newest_tick(self) -> float:
        """The newest tick started so far (0 if none)."""
        return max((_tick(record.id) for record in self.ticks()), default=0.0)

    def idle(self) -> bool:
        return not any(record.status in ("PENDING", "RUNNING") for record in self.ticks())

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.app.shutdown()


def test_every_second_with_three_workers_each_tick_runs_exactly_once(
    tmp_path: Path, postgres_url: str
) -> None:
    fleets = [
        Fleet("postgresql", postgres_url, tmp_path),
        Fleet("sqlite", f"sqlite:///{tmp_path / 'perdure.db'}", tmp_path),
    ]
    try:
        for fleet in fleets:
            wait_for(
                lambda f=fleet: f.running_executors() == WORKERS and f.newest_tick() > 0,
                120,
                f"{WORKERS} {fleet.kind} workers to start and fire a first tick",
                interval=0.2,
            )
        began = time.time()
        while time.time() < began + WINDOW:
            for fleet in fleets:
                fleet.assert_alive()
            time.sleep(0.5)
        for fleet in fleets:
            # Not an assumption on timing: wait (generously) for the window's last tick.
            wait_for(
                lambda f=fleet: f.newest_tick() >= began + WINDOW - 1,
                60,
                f"the {fleet.kind} ticks to reach the end of the window",
                interval=0.2,
            )
        for fleet in fleets:
            assert fleet.app.pause_schedule(NAME)
            assert fleet.running_executors() == WORKERS
        for fleet in fleets:
            wait_for(fleet.idle, 60, f"the {fleet.kind} ticks to finish", interval=0.2)
    finally:
        for fleet in fleets:
            fleet.stop()

    for fleet in fleets:
        records = fleet.ticks()
        assert {record.status for record in records} == {"SUCCEEDED"}, fleet.kind
        ticks = sorted(datetime.fromisoformat(r.id.split(":", 2)[2]) for r in records)
        seconds = [tick.timestamp() for tick in ticks]
        assert len(seconds) >= WINDOW, fleet.kind
        # None missed: every second from the first tick to the last, each once, and they
        # span the window during which all three workers ran.
        assert seconds == [seconds[0] + n for n in range(len(seconds))], fleet.kind
        assert seconds[0] <= began + 1 and seconds[-1] >= began + WINDOW - 1, fleet.kind
        # Exactly once: each tick's step ran once, in one of the workers.
        lines = [json.loads(line) for line in fleet.ledger.read_text().splitlines()]
        runs = Counter(line["tick"] for line in lines)
        assert runs == Counter(tick.isoformat() for tick in ticks), fleet.kind
        assert {line["pid"] for line in lines} <= {proc.pid for proc in fleet.procs}
