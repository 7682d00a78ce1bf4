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

``perdure.integrations.fastapi`` does the plumbing: its ``lifespan`` runs the app's
executor in the API process, ``start_accepted`` answers the 202, ``status_response`` the
status URL. Serve it with ``uvicorn service:api`` (main.py serves it in a thread).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import perdure
from perdure.integrations.fastapi import lifespan, start_accepted, status_response

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

# The API process also runs the workflows: it executes the jobs it starts, and at start-up
# resumes those that a previous process left unfinished; at shutdown it drains them.
api = FastAPI(title="sales reports", lifespan=lifespan(app))


class ReportRequest(BaseModel):
    regions: list[str]


@api.post("/reports", status_code=202)
async def create_report(
    request: ReportRequest, idempotency_key: str | None = Header(default=None)
) -> JSONResponse:
    # Durable when it answers: the job exists before the client hears about it.
    return await start_accepted(
        app,
        sales_report,
        request.regions,
        workflow_id=f"report-{idempotency_key or uuid.uuid4()}",
        status_url="/reports/{workflow_id}",
    )


@api.get("/reports/{report_id}")
async def report_status(report_id: str) -> JSONResponse:
    # Its status, the progress it publishes (with Retry-After) while it runs, its result.
    return await status_response(app, report_id, event="progress")
