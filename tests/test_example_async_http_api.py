"""examples/async_http_api: POST answers 202 with a status URL, which shows progress and
then the result; driven with httpx against the API served by uvicorn."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from example_loader import load_example, run_script


def test_post_returns_202_and_the_status_url_shows_progress_then_the_result(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    with (
        load_example("async_http_api") as main,
        main.LocalServer(main.service.api) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        outcome = main.run(server.url, key="q1")

        assert outcome.status_url == "/reports/report-q1"
        assert outcome.retried_status_url == outcome.status_url
        by_region = {"north": 245, "south": 320, "east": 300, "west": 10}
        assert outcome.final == {
            "id": "report-q1",
            "status": "SUCCEEDED",
            "result": {"regions": main.REGIONS, "by_region": by_region, "total": 875},
        }
        # The client saw the job run (it takes 4 queries of 0.3 s): progress that only
        # goes forward.
        running = [body for body in outcome.progress if body["status"] == "RUNNING"]
        done = [body["progress"]["done"] for body in running if body.get("progress")]
        assert done, outcome.progress
        assert done == sorted(done) and all(0 <= n <= 4 for n in done)

        # One job per key: the retried POST started nothing new.
        assert len(main.service.app.list_workflows(name="sales_report")) == 1

        # A job that's running says when to look again.
        created = client.post("/reports", json={"regions": ["east", "west"]})
        assert created.status_code == 202
        location = created.headers["Location"]
        assert created.json() == {"id": location.rsplit("/", 1)[1], "status_url": location}
        first = client.get(location)
        assert first.status_code == 200
        assert first.json()["status"] in ("PENDING", "RUNNING")
        assert first.headers["Retry-After"] == "1"
        main.service.app.retrieve(first.json()["id"]).result(timeout=30)
        assert client.get(location).json()["result"]["total"] == 310

        assert client.get("/reports/report-nope").status_code == 404


@pytest.mark.slow
def test_script_runs() -> None:
    out = run_script("async_http_api")
    assert re.search(
        r"POST /reports -> 202 Accepted, Location: /reports/report-sales-2026-q1-\w{6}\n", out
    )
    assert "'total': 875" in out
    assert "(the same job, not a new one)" in out
