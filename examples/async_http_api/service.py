"""Async HTTP API: a long job behind ``202 Accepted`` and a status URL.

``POST /reports`` starts a ``sales_report`` workflow and answers at once with
``202 Accepted`` and a ``Location`` header naming the report's status URL.
``GET /reports/{id}`` answers where the workflow stands: its status and the progress
it publishes (``perdure.set_event``) while it runs, then its result. The client
polls it, as ``Retry-After`` suggests.

The job outlives any request, and the API process too: the workflow is recorded
before the 202 goes out, and a restarted (or another) process with the same app
resumes it. An ``Idempotency-Key`` header makes a retried POST find the same job
instead of starting a second one, since starting is idempotent on the workflow ID.

Serve it with ``uvicorn service:api`` (main.py serves it in a thread).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import perdure

app = perdure.App()  # PERDURE_DATABASE_URL, or ./perdure.db

#: How long one region's query takes: the job is long enough to be polled.
QUERY_SECONDS = 0.3
#: What the (simulated) warehouse knows: orders per region.
ORDERS = {"north": [120, 80, 45], "south": [300, 20], "east": [75, 75, 75, 75], "west": [10]}


@dataclass
class SalesReport:
    regions: list[str]
    by_region: dict[str, int]
    total: int


@app.step
async def query_region(region: str) -> int:
    """One slow query to the warehouse (a step: a resumed job doesn't query it again)."""
    await asyncio.sleep(QUERY_SECONDS)
    return sum(ORDERS.get(region, []))


@app.workflow
async def sales_report(regions: list[str]) -> SalesReport:
    by_region: dict[str, int] = {}
    for done, region in enumerate(regions):
        # Published for the status URL; recorded, so a replay doesn't publish it again.
        perdure.set_event("progress", {"done": done, "of": len(regions), "now": region})
        by_region[region] = await query_region(region)
    perdure.set_event("progress", {"done": len(regions), "of": len(regions), "now": None})
    return SalesReport(regions, by_region, sum(by_region.values()))


# -- the HTTP API -----------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # The API process also runs the workflows: it executes the jobs it starts, and at
    # start-up resumes those that a previous process left unfinished.
    app.launch()
    try:
        yield
    finally:
        await asyncio.to_thread(app.shutdown)


api = FastAPI(title="sales reports", lifespan=lifespan)


class ReportRequest(BaseModel):
    regions: list[str]


@api.post("/reports", status_code=202)
async def create_report(
    request: ReportRequest, idempotency_key: str | None = Header(default=None)
) -> JSONResponse:
    report_id = f"report-{idempotency_key or uuid.uuid4()}"
    # Durable when it returns: the job exists before the client hears about it.
    await app.start_async(sales_report, request.regions, workflow_id=report_id)
    status_url = f"/reports/{report_id}"
    return JSONResponse(
        {"id": report_id, "status_url": status_url},
        status_code=202,
        headers={"Location": status_url},
    )


@api.get("/reports/{report_id}")
def report_status(report_id: str, response: Response) -> dict[str, Any]:
    # A plain def: FastAPI runs it in a thread, where perdure's blocking calls belong.
    try:
        handle = app.retrieve(report_id)
    except perdure.WorkflowNotFoundError:
        raise HTTPException(404, f"no report {report_id}") from None
    status = handle.status()
    body: dict[str, Any] = {"id": report_id, "status": status.status}
    if status.status == "SUCCEEDED":
        body["result"] = handle.result(timeout=0)
    elif status.status == "FAILED":
        body["error"] = status.error
    else:
        body["progress"] = app.get_event(report_id, "progress")
        response.headers["Retry-After"] = "1"
    return body
