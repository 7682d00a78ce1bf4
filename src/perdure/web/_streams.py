"""A workflow's stream as Server-Sent Events: ``GET /api/workflows/{id}/stream?key=...``.

Each value is one event whose ``id`` is its offset and whose ``data`` is its value as
JSON (the stored JSON; a value stored by another serializer comes as its text); the
stream ends with an ``end`` event (``data``: whether it was closed, else the workflow
ended). A browser's ``EventSource`` that reconnects sends ``Last-Event-ID``, and the
stream goes on after that offset: nothing missed, nothing twice. ``start=`` picks the
first offset by hand. Included by ``create_app`` under its ``/api`` router, so behind
the same token and host checks as every endpoint.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from .._app import App
from .._inspect import decode_value
from .._validation import check_key


def _event(event: str | None, data: object, event_id: int | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    # json.dumps writes no newline: one data line, whatever the value.
    lines.append(f"data: {json.dumps(data)}")
    return "\n".join(lines) + "\n\n"


def _first_offset(start: int, last_event_id: str | None) -> int:
    if last_event_id is not None and last_event_id.strip().isdigit():
        return max(start, int(last_event_id) + 1)
    return start


def stream_routes(app: App) -> APIRouter:
    """The streaming endpoint of ``app`` (include it in a router that checks callers)."""
    router = APIRouter()

    @router.get("/workflows/{workflow_id:path}/stream")
    async def stream(
        workflow_id: str,
        key: str = Query(description="the stream's key (perdure.write_stream)"),
        start: int = Query(default=0, ge=0, description="the first offset to send"),
        last_event_id: str | None = Header(default=None),
    ) -> StreamingResponse:
        """The workflow's stream ``key`` as Server-Sent Events, replayed and then live
        until the stream closes or the workflow ends."""
        check_key("stream key", key)
        await app.retrieve_async(workflow_id)  # 404 before the stream opens
        reader = app.read_stream(workflow_id, key, _first_offset(start, last_event_id))

        async def events() -> AsyncIterator[str]:
            async for entry in reader.entries():
                yield _event(None, decode_value(entry.value), entry.offset)
            yield _event("end", {"closed": reader.closed})

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            # Not cached, and not held back by a buffering proxy.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
