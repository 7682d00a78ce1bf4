"""A fake model server speaking the OpenAI chat-completions API, with a script: what the
Pydantic AI agent of agent.py talks to, through Pydantic AI's own OpenAI model.

``POST /v1/chat/completions`` follows the conversation: turn 1 calls ``get_weather``,
turn 2 ``convert_temperature`` with the Celsius the first tool returned, turn 3 answers
from both results, in small text deltas (``"stream": true``: server-sent events, as the
real API sends them; otherwise one JSON completion).

It counts the calls it gets per turn (``calls``), which is how the example shows that a
resumed agent repeats no finished model call. And it can play a slow model: the first
call of turn ``hold_turn`` is not answered until its caller hangs up, so that the example
can kill the worker while the model "thinks".
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

#: Longest a held call waits for its caller to hang up.
MAX_HOLD_SECONDS = 30.0
#: The cities the model recognizes in a question.
CITIES = ("Paris", "Lisbon", "Oslo")


def turn_of(messages: list[dict[str, Any]]) -> int:
    """The conversation's turn: 1 + the assistant messages so far."""
    return 1 + sum(1 for m in messages if m.get("role") == "assistant")


def tool_results(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The result of each tool called so far, by tool name."""
    names = {
        call["id"]: call["function"]["name"]
        for m in messages
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
    }
    return {
        names[m["tool_call_id"]]: json.loads(m["content"])
        for m in messages
        if m.get("role") == "tool" and m.get("tool_call_id") in names
    }


def scripted_reply(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | list[str]:
    """A tool call ``(name, arguments)``, or the answer as a list of text deltas."""
    results = tool_results(messages)
    if "get_weather" not in results:
        question = next(str(m["content"]) for m in messages if m.get("role") == "user")
        city = next((city for city in CITIES if city in question), "Paris")
        return "get_weather", {"city": city}
    weather = results["get_weather"]
    if "convert_temperature" not in results:
        return "convert_temperature", {"celsius": weather["celsius"]}
    umbrella = "take an umbrella" if weather["sky"] == "rain" else "no umbrella needed"
    answer = (
        f"Tomorrow in {weather['city']}: {weather['sky']}, {weather['celsius']} °C "
        f"({results['convert_temperature']} °F), so {umbrella}."
    )
    # Deltas of a few words, as a model streams tokens.
    words = answer.split(" ")
    return [
        " ".join(words[i : i + 2]) + (" " if i + 2 < len(words) else "")
        for i in range(0, len(words), 2)
    ]


class FakeOpenAI:
    """The service (``api``, a FastAPI app) and what it observed."""

    def __init__(self, hold_turn: int | None = None) -> None:
        self.hold_turn = hold_turn
        #: Calls received per turn (a call that was cut off counts too).
        self.calls: Counter[int] = Counter()
        #: What happened, in order: one line per call received and per reply sent.
        self.log: list[str] = []
        #: Set when the held call arrives.
        self.holding = threading.Event()
        self.api = FastAPI(title="fake OpenAI")
        self.api.post("/v1/chat/completions")(self.completions)

    async def completions(self, request: Request) -> Any:
        body = await request.json()
        messages: list[dict[str, Any]] = body["messages"]
        turn = turn_of(messages)
        self.calls[turn] += 1
        self.log.append(f"turn {turn}: call {self.calls[turn]}")
        if turn == self.hold_turn and self.calls[turn] == 1:
            self.log.append(f"turn {turn}: thinking (slowly)...")
            self.holding.set()
            await self._until_disconnected(request)
            self.log.append(f"turn {turn}: the caller hung up, no reply")
            return JSONResponse({"error": {"message": "the caller hung up"}}, status_code=499)
        reply = scripted_reply(messages)
        if isinstance(reply, tuple):
            self.log.append(f"turn {turn}: calls tool {reply[0]}({reply[1]})")
        else:
            self.log.append(f"turn {turn}: answers in {len(reply)} deltas")
        model = body.get("model", "fake")
        if body.get("stream"):
            return StreamingResponse(
                self._chunks(model, turn, reply), media_type="text/event-stream"
            )
        return JSONResponse(self._completion(model, turn, reply))

    @staticmethod
    def _message(turn: int, reply: tuple[str, dict[str, Any]] | list[str]) -> dict[str, Any]:
        if isinstance(reply, list):
            return {"role": "assistant", "content": "".join(reply)}
        name, arguments = reply
        call = {
            "id": f"call-{turn}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}

    def _completion(self, model: str, turn: int, reply: Any) -> dict[str, Any]:
        finish = "stop" if isinstance(reply, list) else "tool_calls"
        return {
            "id": f"chatcmpl-{turn}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": self._message(turn, reply), "finish_reason": finish}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }

    async def _chunks(self, model: str, turn: int, reply: Any) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data = {
                "id": f"chatcmpl-{turn}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n"

        if isinstance(reply, list):
            yield chunk({"role": "assistant", "content": ""})
            for delta in reply:
                await asyncio.sleep(0.05)  # a model takes its time per token
                yield chunk({"content": delta})
            yield chunk({}, "stop")
        else:
            message = self._message(turn, reply)
            call = dict(message["tool_calls"][0], index=0)
            yield chunk({"role": "assistant", "content": None, "tool_calls": [call]})
            yield chunk({}, "tool_calls")
        yield "data: [DONE]\n\n"

    @staticmethod
    async def _until_disconnected(request: Request) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_HOLD_SECONDS
        while not await request.is_disconnected() and loop.time() < deadline:
            await asyncio.sleep(0.02)
