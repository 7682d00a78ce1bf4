"""examples/agent: the agent's worker is SIGKILLed while an LLM call is in flight; a new
worker resumes the conversation without repeating a completed LLM call or tool."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from example_loader import load_example, run_script

pytestmark = pytest.mark.slow


def test_agent_resumes_mid_conversation_without_repeating_completed_calls(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    with load_example("agent") as main:
        try:
            outcome = main.run(tmp_path)
        finally:
            main.agent.app.shutdown()

    assert outcome.answer == "Tomorrow in Paris: rain, 14 °C (57.2 °F), so take an umbrella."
    # Turns 1 and 2 completed before the kill: called once. Turn 3 was in flight (the
    # fake LLM held it until worker 1 died): called again, with the same request ID.
    turn = f"{main.AGENT_ID}/turn-"
    assert outcome.llm_calls == {f"{turn}1": 1, f"{turn}2": 1, f"{turn}3": 2}
    # Both tools ran before the kill, and not again.
    assert outcome.tool_runs == [
        ("get_weather", outcome.killed_pid),
        ("convert_temperature", outcome.killed_pid),
    ]


def test_script_runs() -> None:
    out = run_script("agent")
    assert "The agent answers: 'Tomorrow in Paris: rain" in out
    assert re.search(r"agent-\w{6}/turn-3: 2 call\(s\)", out), out
