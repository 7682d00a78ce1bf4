"""examples/edge_device: readings taken while the collector is unreachable are uploaded
with retries once it is back, and the collector holds each exactly once."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from example_loader import load_example, run_script


def test_every_reading_reaches_the_collector_exactly_once(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.setenv("COLLECTOR_URL", "")  # run() sets it; restored after the test
    monkeypatch.chdir(tmp_path)
    with load_example("edge_device") as main, main.device.app:
        outcome = main.run(tmp_path)
        lost_ack = main.LOST_ACK

    assert outcome.summary == {"taken": 12, "synced": 12}
    assert [(r["key"], r["seq"], r["value"]) for r in outcome.stored] == [
        (f"sensor-7-{seq}", seq, round(20 + 5 * math.sin(seq / 2), 2)) for seq in range(12)
    ]
    # Sent once, except the reading whose first acknowledgement was lost: sent again,
    # stored once.
    assert {r["key"]: r["received"] for r in outcome.stored if r["received"] != 1} == {lost_ack: 2}
    # At least three uploads failed while the link was down, and were retried.
    assert len(outcome.retried) >= 3


@pytest.mark.slow
def test_script_runs() -> None:
    out = run_script("edge_device")
    assert "Collector: 12 readings for 12 taken" in out
