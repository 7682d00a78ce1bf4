"""perdure in a FastAPI service (``pip install 'perdure[web]'``).

- ``lifespan(app)``: the service's process runs workflows too. At start-up it launches
  the app's executor (which also resumes what an earlier process left unfinished); at
  shutdown it drains it: running workflows get ``shutdown_grace`` seconds, the rest are
  released to other executors at once, and the store is closed.
- ``start_accepted(app, fn, *args, status_url=...)``: the async HTTP API pattern. Start
  a workflow (durable before the answer goes out; idempotent on ``workflow_id``) and
  answer ``202 Accepted`` with the status URL in ``Location``.
- ``status_response(app, workflow_id)``: what that status URL answers: the workflow's
  status, then its result (or error); while it runs, the latest value of an event it
  publishes as progress, and ``Retry-After``. 404 for an unknown ID.

::

    api = FastAPI(lifespan=lifespan(app))

    @api.post("/reports", status_code=202)
    async def create(body: Request) -> JSONResponse:
        return await start_accepted(app, report, body.regions, status_url="/reports/{workflow_id}")

    @api.get("/reports/{report_id}")
    async def status(report_id: str) -> JSONResponse:
        return await status_response(app, report_id, event="progress")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from .._app import App
from .._errors import WorkflowNotFoundError

__all__ = ["lifespan", "start_accepted", "status_response"]


def lifespan(app: App) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan`` that launches ``app``'s executor at start-up and drains it
    at shutdown (see the module). ``FastAPI(lifespan=lifespan(app))``."""

    @asynccontextmanager
    async def running(_: FastAPI) -> AsyncIterator[None]:
        # Both open the store and start or join threads: off the server's event loop.
        await asyncio.to_thread(app.launch)
        try:
            yield
        finally:
            await asyncio.to_thread(app.shutdown)

    return running


async def start_accepted(
    app: App,
    fn: Callable[..., Any] | str,
    /,
    *args: Any,
    status_url: str,
    workflow_id: str | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> JSONResponse:
    """Start workflow ``fn(*args, **kwargs)`` and answer ``202 Accepted``: body
    ``{"id": <workflow ID>, "status_url": <url>}``, header ``Location: <url>``.

    ``status_url`` is the status URL with ``{workflow_id}`` where the ID goes (quoted
    for a URL path). The start is durable before this returns, and idempotent on
    ``workflow_id`` (an ``Idempotency-Key`` makes a good one): a retried request finds
    the same workflow instead of starting another."""
    starter = app.options(workflow_id=workflow_id, timeout=timeout)
    handle = await starter.start_async(fn, *args, **kwargs)
    url = status_url.format(workflow_id=quote(handle.workflow_id, safe=""))
    return JSONResponse(
        {"id": handle.workflow_id, "status_url": url},
        status_code=202,
        headers={"Location": url},
    )


async def status_response(
    app: App, workflow_id: str, *, event: str | None = None, retry_after: int = 1
) -> JSONResponse:
    """Where the workflow stands, as JSON: ``{"id", "status"}`` and ``"result"`` once it
    succeeded, ``"error"`` once it failed; while it is active, ``"progress"`` (the value
    of its event ``event``, when given) and a ``Retry-After`` of ``retry_after`` seconds.
    404 (``{"error": ...}``) when no workflow has this ID."""
    try:
        handle = await app.retrieve_async(workflow_id)
    except WorkflowNotFoundError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    status = await asyncio.to_thread(handle.status)
    body: dict[str, Any] = {"id": workflow_id, "status": status.status}
    headers: dict[str, str] = {}
    if status.status == "SUCCEEDED":
        body["result"] = await handle.result_async(timeout=0)
    elif status.status in ("FAILED", "CANCELLED"):
        body["error"] = status.error
    else:
        if event is not None:
            body["progress"] = await app.get_event_async(workflow_id, event)
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(jsonable_encoder(body), headers=headers)
