"""A fake LLM service with scripted, deterministic replies: what agent.py talks to.

``POST /v1/chat`` takes ``{"request_id", "messages"}`` and answers
``{"message": {...}}``, an assistant message that either calls a tool
(``"tool_call": {"name", "arguments"}``) or answers (``"content"``). The script
follows the conversation: first ask for the weather, then for the temperature in
Fahrenheit, then answer from the two tool results.

It counts the calls it gets per request ID (``calls``), which is how the example
shows that a resumed agent repeats no completed LLM call. And it can play a slow
model: the first call of turn ``hold_turn`` isn't answered until its caller hangs
up, so that the example can kill the worker while the model "thinks".
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel

#: The cities the model recognizes in a question.
CITIES = ("Paris", "Lisbon", "Oslo")
#: Longest a held call waits for its caller to hang up.
MAX_HOLD_SECONDS = 30.0


class ChatRequest(BaseModel):
    request_id: str
    messages: list[dict[str, Any]]


def scripted_reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant's next message, decided by the tool results so far."""
    results = {m["name"]: m["content"] for m in messages if m["role"] == "tool"}
    if "get_weather" not in results:
        question = next(m["content"] for m in messages if m["role"] == "user")
        city = next((city for city in CITIES if city in question), "Paris")
        return tool_call("get_weather", city=city)
    weather = results["get_weather"]
    if "convert_temperature" not in results:
        return tool_call("convert_temperature", celsius=weather["celsius"])
    umbrella = "take an umbrella" if weather["sky"] == "rain" else "no umbrella needed"
    return {
        "role": "assistant",
        "content": (
            f"Tomorrow in {weather['city']}: {weather['sky']}, {weather['celsius']} °C "
            f"({results['convert_temperature']} °F), so {umbrella}."
        ),
        "tool_call": None,
    }


def tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_call": {"name": name, "arguments": arguments},
    }


class FakeLLM:
    """The service (``api``, a FastAPI app) and what it observed."""

    def __init__(self, hold_turn: int | None = None) -> None:
        self.hold_turn = hold_turn
        #: Calls received per request ID (a call that was cut off counts too).
        self.calls: Counter[str] = Counter()
        #: What happened, in order: one line per call received and per reply sent.
        self.log: list[str] = []
        #: Set when the held call arrives.
        self.holding = threading.Event()
        self.api = FastAPI(title="fake LLM")
        self.api.post("/v1/chat")(self.chat)

    async def chat(self, body: ChatRequest, request: Request) -> dict[str, Any]:
        self.calls[body.request_id] += 1
        self.log.append(f"call {self.calls[body.request_id]} of {body.request_id}")
        turn = 1 + sum(1 for m in body.messages if m["role"] == "assistant")
        if turn == self.hold_turn and self.calls[body.request_id] == 1:
            self.log.append(f"{body.request_id}: thinking (slowly)...")
            self.holding.set()
            await self._until_disconnected(request)
            if await request.is_disconnected():
                self.log.append(f"{body.request_id}: the caller hung up, no reply")
                return {"message": None}
        reply = scripted_reply(body.messages)
        call = reply["tool_call"]
        what = f"call tool {call['name']}({call['arguments']})" if call else repr(reply["content"])
        self.log.append(f"{body.request_id}: replies {what}")
        return {"message": reply}

    @staticmethod
    async def _until_disconnected(request: Request) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_HOLD_SECONDS
        while not await request.is_disconnected() and loop.time() < deadline:
            await asyncio.sleep(0.02)
