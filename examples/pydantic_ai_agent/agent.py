"""A Pydantic AI agent made durable by perdure: each model request and each tool call is a
step, and the answer's text is streamed to a perdure stream.

The agent is plain Pydantic AI: an OpenAI chat model (pointed at the fake server of
fake_openai.py by ``FAKE_OPENAI_URL``), two tools, and the ``PerdureDurability``
capability. The workflow ``forecast`` runs it. A worker that dies mid-run is replaced by
another, which replays the run: the model requests and tool calls that finished return
their records, and only the one in flight at the crash is made again.

Workers run it with ``python -m perdure worker agent:app``. Tools append their runs, with
the PID of the process, to ``./tools.jsonl``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import perdure
from perdure.integrations.pydantic_ai import PerdureDurability

app = perdure.App()  # PERDURE_DATABASE_URL, or ./perdure.db

TOOL_LEDGER = Path("tools.jsonl")
#: The perdure stream the answer's text goes to, delta by delta.
TOKENS = "tokens"

model = OpenAIChatModel(
    "fake-gpt",
    provider=OpenAIProvider(
        base_url=os.environ.get("FAKE_OPENAI_URL", "http://127.0.0.1:9/v1"), api_key="not-needed"
    ),
)

agent = Agent(
    model,
    name="weather",
    instructions="Answer questions about tomorrow's weather; use the tools.",
    capabilities=[
        PerdureDurability(
            stream=TOKENS,
            # A model call that fails (the service is down, a timeout) is tried again.
            model_step={"retry": perdure.Retry(max_attempts=4, initial_interval=0.5)},
        )
    ],
)


def ledger(tool: str) -> None:
    """Note a tool run (one write on an O_APPEND file: whole lines across processes)."""
    line = json.dumps({"tool": tool, "pid": os.getpid()}) + "\n"
    fd = os.open(TOOL_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@agent.tool_plain
def get_weather(city: str) -> dict[str, Any]:
    """Tomorrow's weather in ``city``: sky and temperature in Celsius."""
    ledger("get_weather")
    forecasts = {"Paris": ("rain", 14), "Lisbon": ("sun", 24)}
    sky, celsius = forecasts.get(city, ("clouds", 17))
    return {"city": city, "sky": sky, "celsius": celsius}


@agent.tool_plain
def convert_temperature(celsius: float) -> float:
    """Degrees Celsius in Fahrenheit."""
    ledger("convert_temperature")
    return round(celsius * 9 / 5 + 32, 1)


@app.workflow
async def forecast(question: str) -> str:
    """The agent's run, as a durable workflow."""
    result = await agent.run(question)
    return result.output
