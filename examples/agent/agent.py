"""An AI agent loop as a workflow: every LLM call and every tool call is a step.

``agent`` sends the conversation to the LLM, runs the tool the LLM asks for, appends
its result, and asks again, until the LLM answers. Since each LLM call is a step,
its reply is checkpointed: an agent whose worker dies mid-conversation resumes on
another worker with the conversation rebuilt from the checkpoints, without paying for
(or getting different answers from) the LLM calls it already made, and without
running its tools again. Only a call in flight at the crash is made again, with the
same request ID, which an LLM API can use to deduplicate.

Workers run it with ``python -m perdure worker agent:app``; the LLM's URL comes from
``FAKE_LLM_URL`` (fake_llm.py, served by main.py). Tools append their runs, with the
PID of the process, to ``./tools.jsonl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

import perdure

app = perdure.App()  # PERDURE_DATABASE_URL, or ./perdure.db

Message = dict[str, Any]

#: An agent that hasn't answered after this many LLM calls gives up.
MAX_TURNS = 8
TOOL_LEDGER = Path("tools.jsonl")


@app.step(retry=perdure.Retry(max_attempts=4, initial_interval=0.5, retry_on=(httpx.HTTPError,)))
async def call_llm(request_id: str, messages: list[Message]) -> Message:
    """One LLM call; retried when the service fails or is unreachable."""
    async with httpx.AsyncClient(base_url=os.environ["FAKE_LLM_URL"], timeout=60) as client:
        response = await client.post(
            "/v1/chat", json={"request_id": request_id, "messages": messages}
        )
        response.raise_for_status()
        reply: Message = response.json()["message"]
        return reply


def ledger(tool: str) -> None:
    """Note a tool run (one write on an O_APPEND file: whole lines across processes)."""
    line = json.dumps({"tool": tool, "pid": os.getpid()}) + "\n"
    fd = os.open(TOOL_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.step
async def get_weather(city: str) -> dict[str, Any]:
    ledger("get_weather")
    forecasts = {"Paris": ("rain", 14), "Lisbon": ("sun", 24)}
    sky, celsius = forecasts.get(city, ("clouds", 17))
    return {"city": city, "sky": sky, "celsius": celsius}


@app.step
async def convert_temperature(celsius: float) -> float:
    ledger("convert_temperature")
    return round(celsius * 9 / 5 + 32, 1)


TOOLS: dict[str, Callable[..., Awaitable[Any]]] = {
    "get_weather": get_weather,
    "convert_temperature": convert_temperature,
}


@app.workflow
async def agent(question: str) -> str:
    """Converse with the LLM, running the tools it calls, until it answers."""
    messages: list[Message] = [{"role": "user", "content": question}]
    for turn in range(1, MAX_TURNS + 1):
        perdure.set_event("turn", turn)
        # The request ID is the same on every attempt and after a resume.
        reply = await call_llm(f"{perdure.workflow_id()}/turn-{turn}", messages)
        messages.append(reply)
        call = reply["tool_call"]
        if call is None:
            answer: str = reply["content"]
            return answer
        tool = TOOLS.get(call["name"])
        result = await tool(**call["arguments"]) if tool else f"no tool {call['name']!r}"
        messages.append({"role": "tool", "name": call["name"], "content": result})
    raise RuntimeError(f"the agent gave no answer in {MAX_TURNS} turns")
