"""examples/pydantic_ai_agent: a Pydantic AI agent's worker is SIGKILLed while a model call
is in flight; a new worker resumes the run without repeating a finished model call or tool
call, and the client reads the answer's tokens from the stream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# Pydantic AI 2.x needs Python 3.11 or later (perdure[examples] installs it there).
pytest.importorskip("pydantic_ai")
pytest.importorskip("openai")

from example_loader import load_example, run_script  # noqa: E402

pytestmark = pytest.mark.slow

ANSWER = "Tomorrow in Paris: rain, 14 °C (57.2 °F), so take an umbrella."


def test_agent_resumes_mid_run_without_repeating_finished_calls_and_streams_tokens(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    with load_example("pydantic_ai_agent") as main:
        try:
            outcome = main.run(tmp_path)
        finally:
            main.agent.app.shutdown()

    assert outcome.answer == ANSWER
    # Turns 1 and 2 finished before the kill: called once. Turn 3 was in flight (the fake
    # model held it until worker 1 died): called again.
    assert outcome.model_calls == {1: 1, 2: 1, 3: 2}
    # Both tools ran before the kill, and not again.
    assert outcome.tool_runs == [
        ("get_weather", outcome.killed_pid),
        ("convert_temperature", outcome.killed_pid),
    ]
    # The client read the answer from the stream, in more than one token.
    assert "".join(outcome.tokens) == ANSWER
    assert len(outcome.tokens) > 1


def test_script_runs() -> None:
    out = run_script("pydantic_ai_agent")
    assert f"The agent answers: {ANSWER!r}" in out
    assert re.search(r"model turn 3: 2 call\(s\)", out), out
    assert "[client] token" in out
