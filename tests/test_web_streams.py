"""A workflow's stream over Server-Sent Events, over real HTTP (uvicorn on a free port),
behind the API's token; on both stores."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
from test_web_api import TOKEN, serving, wait_for

import perdure


def parse(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body: id, event and decoded data."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append(
            {"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])}
        )
    return events


def test_a_stream_served_as_server_sent_events(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()

    @app.workflow(name="chat")
    def chat() -> str:
        perdure.write_stream("tokens", "Hello")
        perdure.write_stream("tokens", {"text": " world", "n": 2})
        perdure.recv("more")
        perdure.write_stream("tokens", "!")
        perdure.close_stream("tokens")
        return "done"

    auth = {"Authorization": f"Bearer {TOKEN}"}
    with app, serving(app) as base, httpx.Client(base_url=base, headers=auth, timeout=30) as http:
        handle = app.start(chat, workflow_id="chat/1")
        url = "/api/workflows/chat/1/stream"
        received: list[str] = []

        def listen() -> None:
            # Streamed: the first events arrive while the workflow still waits.
            with http.stream("GET", url, params={"key": "tokens"}) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                for chunk in response.iter_text():
                    received.append(chunk)

        listener = threading.Thread(target=listen)
        listener.start()
        wait_for(lambda: "world" in "".join(received))
        assert '"!"' not in "".join(received)
        app.send("chat/1", "go", topic="more")
        listener.join(timeout=30)
        assert not listener.is_alive()
        assert parse("".join(received)) == [
            {"id": "0", "event": None, "data": "Hello"},
            {"id": "1", "event": None, "data": {"text": " world", "n": 2}},
            {"id": "2", "event": None, "data": "!"},
            {"id": None, "event": "end", "data": {"closed": True}},
        ]
        assert handle.result(timeout=15) == "done"
        # A reconnecting EventSource sends the last ID it saw: the rest, nothing twice.
        again = http.get(url, params={"key": "tokens"}, headers={"Last-Event-ID": "0"})
        assert [e["id"] for e in parse(again.text)] == ["1", "2", None]
        assert [e["id"] for e in parse(http.get(url, params={"key": "tokens", "start": 2}).text)] == [
            "2",
            None,
        ]
        # Refusals: no token, an unknown workflow, a missing key.
        assert httpx.get(f"{base}{url}", params={"key": "tokens"}).status_code == 401
        missing = http.get("/api/workflows/nope/stream", params={"key": "tokens"})
        assert missing.status_code == 404 and missing.json()["type"] == "WorkflowNotFoundError"
        assert http.get(url).status_code == 422
