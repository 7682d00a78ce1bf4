"""examples/aggregator: one workflow per key adds up the events sent to it, each once
(duplicates carry the same idempotency key), across batches (each run continues as
new after one), restarts of the process, and redeliveries in a later generation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from example_loader import load_example, run_script


@pytest.fixture
def main(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example's main module, its app launched on the test's database."""
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    with load_example("aggregator") as module:
        try:
            module.app.launch()
            yield module
        finally:
            module.app.shutdown()


def test_totals_count_each_event_once(main: ModuleType) -> None:
    result = main.run()
    assert result == main.expected()
    assert result[main.LYON] == main.totals.Totals(total=70, count=4)
    assert result[main.PARIS] == main.totals.Totals(total=128, count=8)
    # Eight events, a batch of five: Paris's aggregator continued as new once, and its
    # history holds the second run's records only; Lyon's four events fit in one run.
    assert main.totals.generation(main.PARIS) == 1
    assert main.totals.generation(main.LYON) == 0
    for store in result:
        assert len(main.app.store.load_steps(store)) <= 2 * main.totals.BATCH


def test_a_suspended_aggregator_wakes_for_more_events_also_after_a_restart(
    main: ModuleType,
) -> None:
    totals = main.totals
    main.run()
    before = totals.read(main.LYON)

    # Its process restarts: the aggregator waits in the database, nothing is lost.
    main.app.shutdown()
    main.app.launch()
    # More than a batch of new events, and old ones delivered again: the aggregator
    # continues as new in between, and the idempotency keys carry over.
    for n in range(100, 107):
        totals.record(main.LYON, n, f"sale-{n}")
        totals.record(main.LYON, 1000, "sale-3")
        totals.record(main.LYON, n, f"sale-{n}")
    final = main.follow(main.LYON, before.count + 7)
    assert final == totals.Totals(before.total + sum(range(100, 107)), before.count + 7)
    assert totals.read(main.PARIS) == main.expected()[main.PARIS]
    assert totals.generation(main.LYON) == 2  # eleven events, batches of five
    assert len(main.app.store.load_steps(main.LYON)) <= 2 * totals.BATCH


def test_events_redelivered_after_continue_as_new_count_once(main: ModuleType) -> None:
    totals = main.totals
    main.run()
    assert totals.generation(main.PARIS) == 1
    # Every sale again, as a sender replaying its outbox would: all of them were sent to
    # an earlier generation of their aggregator, and none counts again. Events are
    # handled in order, so once a new sale is counted, the redeliveries before it were
    # seen (and stored nothing).
    for store, amount, event_id in main.SALES:
        totals.record(store, amount, event_id)
    totals.record(main.PARIS, 5, "sale-new")
    final = main.follow(main.PARIS, 9)
    assert final == totals.Totals(128 + 5, 9)
    assert totals.read(main.LYON) == main.expected()[main.LYON]


@pytest.mark.slow
def test_script_runs() -> None:
    out = run_script("aggregator")
    assert re.search(r"store-paris-\w{6}: 8 sales, 128 EUR", out), out
    assert re.search(r"store-lyon-\w{6}: 4 sales, 70 EUR", out), out
