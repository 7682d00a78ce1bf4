"""examples/chaining: a worker SIGKILLed mid-chain, another one finishing it; the ledger
shows that no checkpointed step ran again."""

from __future__ import annotations

from pathlib import Path

import pytest
from example_loader import load_example, run_script

pytestmark = pytest.mark.slow


def test_chain_resumes_after_sigkill_without_rerunning_checkpointed_steps(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    with load_example("chaining") as main:
        try:
            outcome = main.run(tmp_path)
        finally:
            main.pipeline.app.shutdown()
        steps = main.pipeline.STEPS

    assert outcome.report == "the: 5\nruns: 3\nworkflow: 3\n"
    killed, resumed = outcome.killed_pid, outcome.resumed_pid
    # Worker 1 was killed once it had started the third step. The last step it started
    # may have been in flight (then it runs again in worker 2); every step before it was
    # checkpointed and ran once, every step after it ran once, in worker 2.
    last = max(i for i, step in enumerate(steps) if killed in outcome.runs[step])
    assert last >= steps.index(main.KILL_DURING)
    for i, step in enumerate(steps):
        if i < last:
            assert outcome.runs[step] == [killed], step
        elif i == last:
            assert outcome.runs[step] in ([killed, resumed], [killed]), step
        else:
            assert outcome.runs[step] == [resumed], step


def test_script_runs() -> None:
    out = run_script("chaining")
    assert "SIGKILL worker 1" in out
    assert "Workflow SUCCEEDED (recovered 1x)" in out
    assert "Report: the: 5, runs: 3, workflow: 3" in out
