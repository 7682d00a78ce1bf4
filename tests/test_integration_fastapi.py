"""``perdure.integrations.fastapi`` in a FastAPI service over real HTTP (uvicorn on a free
port): the lifespan launches and drains the executor, ``start_accepted`` answers 202 with
the status URL, ``status_response`` answers it; on both stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from test_web_api import serving, wait_for

import perdure
from perdure.integrations.fastapi import lifespan, start_accepted, status_response


def test_a_service_starts_workflows_answers_202_and_their_status_url(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="job")
    def job(n: int) -> dict[str, Any]:
        perdure.set_event("progress", {"step": 1})
        if n < 0:
            raise ValueError("negative")
        if perdure.recv("go", timeout=60) is None:
            return {"timed_out": True}
        return {"double": n * 2}

    api = FastAPI(lifespan=lifespan(app))

    @api.post("/jobs/{n}", status_code=202)
    async def create(n: int, idempotency_key: str | None = Header(default=None)) -> JSONResponse:
        return await start_accepted(
            app, job, n, workflow_id=idempotency_key, status_url="/jobs/status/{workflow_id}"
        )

    @api.get("/jobs/status/{job_id:path}")
    async def status(job_id: str) -> JSONResponse:
        return await status_response(app, job_id, event="progress")

    assert not app.launched
    with serving(app, asgi=api) as base, httpx.Client(base_url=base, timeout=30) as http:
        assert app.launched  # the lifespan launched the executor
        created = http.post("/jobs/21", headers={"Idempotency-Key": "job/1"})
        assert created.status_code == 202
        location = created.headers["Location"]
        assert location == "/jobs/status/job%2F1"
        assert created.json() == {"id": "job/1", "status_url": location}
        # A retried request finds the same job.
        again = http.post("/jobs/21", headers={"Idempotency-Key": "job/1"})
        assert again.json() == created.json() and len(app.list_workflows(name="job")) == 1
        wait_for(lambda: http.get(location).json().get("progress") == {"step": 1})
        running = http.get(location)
        assert running.json() == {"id": "job/1", "status": "RUNNING", "progress": {"step": 1}}
        assert running.headers["Retry-After"] == "1"
        app.send("job/1", "go", topic="go")
        wait_for(lambda: http.get(location).json()["status"] == "SUCCEEDED")
        done = http.get(location)
        assert done.json() == {"id": "job/1", "status": "SUCCEEDED", "result": {"double": 42}}
        assert "Retry-After" not in done.headers
        failed = http.post("/jobs/-1").headers["Location"]
        wait_for(lambda: http.get(failed).json()["status"] == "FAILED")
        assert "negative" in str(http.get(failed).json()["error"])
        missing = http.get("/jobs/status/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert not app.launched  # drained and shut down with the server
