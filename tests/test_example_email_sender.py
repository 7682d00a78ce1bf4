"""examples/email_sender: a queue keeps a third party's rate limit and one send per
customer at a time, takes every customer in turn, and sends a deduplicated e-mail once.
Each e-mail is sent once: its delivery is a recorded step."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from example_loader import load_example, run_script


@pytest.fixture
def main(database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example's main module on the test's database (``run`` launches its app)."""
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    with load_example("email_sender") as module:
        try:
            yield module
        finally:
            module.app.shutdown()


def test_the_provider_sees_its_limits_kept(main: ModuleType) -> None:
    outcome = main.run()
    assert len(outcome.sent) == main.NEWSLETTER + 4 + 1 + 1  # the welcome once
    assert outcome.deduplicated
    # The queue's rate, counted on its own start times; the provider's 429s (there should
    # be none: the rate is under its limit) depend on the network's timing, and a
    # rejected request is retried by the step.
    assert outcome.starts_per_window == main.mailer.emails.rate.limit
    assert outcome.peak_per_customer == 1  # one delivery per customer at a time
    # The small customers were not held back by acme's newsletter: all of theirs started
    # while acme's were still waiting; the password reset (priority -1) first.
    started = outcome.started
    assert outcome.reset_first
    assert max(i for i, c in enumerate(started) if c != "acme") < len(started) - 2


@pytest.mark.slow
def test_script_runs() -> None:
    out = run_script("email_sender")
    assert "The provider sent 14 e-mails" in out
    assert "the password reset started first" in out
