"""A durable Pydantic AI agent for tests/test_pydantic_ai.py, run in-process and in worker
subprocesses (``perdure worker agent_app:app`` with ``tests/`` importable) that the tests
kill with SIGKILL.

The model is a ``FunctionModel`` with a script: turn 1 calls ``get_weather``, turn 2
``to_fahrenheit``, turn 3 answers in three text deltas. Every model call and every tool
run appends one line to the ledger file named by ``PERDURE_LEDGER`` (one ``os.write`` on
an ``O_APPEND`` descriptor), with the workflow ID, what ran and the PID. With
``PERDURE_HOLD_TURN=n``, the first call of turn ``n`` (across processes: a marker file in
the current folder says it happened) hangs, so that a test can kill the worker while the
model "thinks".
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic_ai import Agent, ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

import perdure
from perdure.integrations.pydantic_ai import PerdureDurability

ANSWER = ("Rain in Paris, ", "14 °C ", "(57.2 °F).")
HOLD_MARKER = Path("held-model-call.marker")


def ledger(kind: str, name: str) -> None:
    """Append one line: ``{"wf", "kind", "name", "pid"}``."""
    entry = {"wf": perdure.workflow_id(), "kind": kind, "name": name, "pid": os.getpid()}
    fd = os.open(os.environ["PERDURE_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def ledger_counts(path: Path, workflow_id: str) -> dict[str, int]:
    """How many times each model turn and each tool ran for ``workflow_id``."""
    counts: dict[str, int] = {}
    if not path.exists():
        return counts
    text = path.read_text(encoding="utf-8")
    for line in text[: text.rfind("\n") + 1].splitlines():
        entry = json.loads(line)
        if entry["wf"] == workflow_id:
            counts[entry["name"]] = counts.get(entry["name"], 0) + 1
    return counts


def _turn(messages: list[ModelMessage]) -> int:
    return 1 + sum(isinstance(m, ModelResponse) for m in messages)


def _holds(turn: int) -> bool:
    """Whether this call of ``turn`` is the one to hang, its marker made if so: before the
    ledger says the turn runs, so that a worker killed as soon as it does (the test's
    cue) has left the marker, and the next worker's call does not hang too."""
    if os.environ.get("PERDURE_HOLD_TURN") != str(turn) or HOLD_MARKER.exists():
        return False
    HOLD_MARKER.touch()
    return True


def _tool_call(turn: int) -> tuple[str, dict[str, Any]] | None:
    if turn == 1:
        return "get_weather", {"city": "Paris"}
    if turn == 2:
        return "to_fahrenheit", {"celsius": 14}
    return None


def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The script, unstreamed."""
    turn = _turn(messages)
    ledger("model", f"turn-{turn}")
    call = _tool_call(turn)
    if call is not None:
        return ModelResponse(parts=[ToolCallPart(call[0], call[1], tool_call_id=f"call-{turn}")])
    return ModelResponse(parts=[TextPart("".join(ANSWER))])


async def respond_stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    """The script, streamed."""
    turn = _turn(messages)
    hold = _holds(turn)
    ledger("model", f"turn-{turn}")
    if hold:
        await asyncio.sleep(120)  # killed meanwhile
    call = _tool_call(turn)
    if call is not None:
        name, args = call
        yield {0: DeltaToolCall(name, json.dumps(args), tool_call_id=f"call-{turn}")}
        return
    for delta in ANSWER:
        yield delta


agent = Agent(
    FunctionModel(respond, stream_function=respond_stream),
    name="weather",
    capabilities=[PerdureDurability(stream="tokens")],
)


@agent.tool_plain
def get_weather(city: str) -> dict[str, Any]:
    """The weather in a city tomorrow."""
    ledger("tool", "get_weather")
    return {"city": city, "sky": "rain", "celsius": 14}


@agent.tool_plain
def to_fahrenheit(celsius: float) -> float:
    """Celsius to Fahrenheit."""
    ledger("tool", "to_fahrenheit")
    return round(celsius * 9 / 5 + 32, 1)


async def forecast(question: str) -> str:
    """The workflow: the agent's run."""
    result = await agent.run(question)
    return result.output


def build_app(database_url: str | None = None, **settings: Any) -> perdure.App:
    """An app with the ``forecast`` workflow registered."""
    app = perdure.App(database_url, **settings)
    app.workflow(name="forecast")(forecast)
    return app


app = build_app(poll_interval=0.05) if os.environ.get("PERDURE_DATABASE_URL") else None
