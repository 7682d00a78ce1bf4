"""Listings from a read replica (docs/scaling.md, "How to grow", 3): a PostgreSQL hot
standby, a real server in recovery (``tests/pg_standby.py``), answers perdure's reads:
the Python API, the CLI and the HTTP API, with no write and no ``LISTEN`` (which a
standby refuses); a write there says the database is read-only and to use the primary.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest
from pg_standby import StandbyServer, unavailable
from test_cli_output import TESTS_DIR, perdure_cli
from test_web_api import TOKEN, serving

import perdure
from perdure import StoreRejectedError

pytestmark = pytest.mark.postgres


def define(app: perdure.App) -> tuple[object, object]:
    @app.step
    def charge(order: int) -> int:
        if order < 0:
            raise ValueError(f"order {order} is negative")
        return order * 2

    @app.workflow
    def checkout(order: int) -> int:
        return charge(order)

    @app.workflow
    def later(order: int) -> int:
        return order

    return checkout, later


@pytest.fixture(scope="module")
def standby() -> Iterator[str]:
    """The URL of a hot standby holding two finished checkouts (one succeeded, one
    failed) and one workflow started but never run, written while it was a primary."""
    why = unavailable()
    if why is not None:
        if os.environ.get("PERDURE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{why} (PERDURE_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(why)
    server = StandbyServer()
    try:
        url = f"{server.url}?schema=shop"
        app = perdure.App(url)
        checkout, later = define(app)
        with app:
            assert app.options(workflow_id="ok").run(checkout, 21) == 42
            with pytest.raises(ValueError):
                app.options(workflow_id="bad").run(checkout, -1)
        client = perdure.App(url)
        define(client)
        client.options(workflow_id="waiting").start(later, 7)  # no worker: stays PENDING
        client.shutdown()
        server.to_standby()
        yield url
    finally:
        server.close()


def test_an_app_on_a_hot_standby_reads_workflows_and_listens_to_nothing(
    standby: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Threads of this app only: an earlier test in this process may have left its own.
    earlier = set(threading.enumerate())
    app = perdure.App(standby)
    define(app)
    with caplog.at_level(logging.WARNING, logger="perdure"):
        try:
            listed = {s.workflow_id: s.status for s in app.list_workflows()}
            assert listed == {"ok": "SUCCEEDED", "bad": "FAILED", "waiting": "PENDING"}
            assert app.retrieve("ok").result(timeout=5) == 42
            with pytest.raises(ValueError, match="order -1 is negative"):
                app.retrieve("bad").result(timeout=5)
            detail = app.inspect("ok")
            assert [s.status for s in detail.steps] == ["SUCCEEDED"]
            assert detail.steps[0].name.endswith("charge")
            # A standby refuses LISTEN: the app polls instead of starting a listener
            # that would fail and reconnect for as long as it runs.
            names = [t.name for t in threading.enumerate() if t not in earlier]
            assert not [n for n in names if n.startswith("perdure-listener")], names
        finally:
            app.shutdown()
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_a_write_on_a_hot_standby_says_the_database_is_read_only(standby: str) -> None:
    app = perdure.App(standby)
    checkout, _ = define(app)
    try:
        with pytest.raises(StoreRejectedError) as refused:
            app.start(checkout, 5)
        message = str(refused.value)
        assert "read-only" in message and "primary" in message, message
        assert "please report it" not in message  # not a bug of perdure's
        # Awaiting an unfinished workflow marks it to be told of its end: a write too.
        with pytest.raises(StoreRejectedError, match="read-only"):
            app.retrieve("waiting").result(timeout=1)
        assert app.retrieve("waiting").status().status == "PENDING"  # nothing changed
    finally:
        app.shutdown()


def test_the_cli_lists_and_shows_workflows_on_a_hot_standby(standby: str) -> None:
    listed = perdure_cli("list", "--database-url", standby)
    assert listed.returncode == 0, listed.stderr
    for workflow_id in ("ok", "bad", "waiting"):
        assert workflow_id in listed.stdout
    assert listed.stderr == ""
    shown = perdure_cli("status", "ok", "--database-url", standby)
    assert shown.returncode == 0, shown.stderr
    assert "SUCCEEDED" in shown.stdout
    # A repair needs the primary, and says so.
    cancelled = perdure_cli("cancel", "waiting", "--database-url", standby)
    assert cancelled.returncode != 0
    assert "read-only" in cancelled.stderr and "primary" in cancelled.stderr, cancelled.stderr
    # So does a worker: it exits at once, with status 1, instead of retrying.
    path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PERDURE_DATABASE_URL": standby, "PYTHONPATH": path}
    worker = subprocess.run(
        [sys.executable, "-m", "perdure", "worker", "crash_app:app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 1, worker.stderr
    assert "read-only" in worker.stderr and "primary" in worker.stderr, worker.stderr


def test_the_http_api_and_the_dashboard_read_from_a_hot_standby(standby: str) -> None:
    app = perdure.App(standby)
    define(app)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with serving(app) as base, httpx.Client(base_url=base, headers=auth) as http:
            listed = http.get("/api/workflows")
            assert listed.status_code == 200, listed.text
            ids = {w["workflow_id"] for w in listed.json()["workflows"]}
            assert ids == {"ok", "bad", "waiting"}
            shown = http.get("/api/workflows/ok")
            assert shown.status_code == 200 and shown.json()["output"] == 42
            steps = http.get("/api/workflows/ok/steps").json()["steps"]
            assert [s["status"] for s in steps] == ["SUCCEEDED"]
        # The dashboard's pages, after its login (a session cookie, no write to the store).
        with serving(app) as base, httpx.Client(base_url=base) as browser:
            login = browser.post("/login", data={"token": TOKEN}, headers={"Origin": base})
            assert login.status_code == 303, login.text
            listing = browser.get("/")
            assert listing.status_code == 200
            assert all(f'/workflows/{w}"' in listing.text for w in ("ok", "bad", "waiting"))
            page = browser.get("/workflows/bad")
            assert page.status_code == 200 and "order -1 is negative" in page.text
    finally:
        app.shutdown()
