"""Data residency: ``App(regions={...})`` keeps each workflow, with its steps, messages,
events and children, in the database of its region, and finds it there.

Every test runs on two real databases: two SQLite files, a SQLite file and a
PostgreSQL schema, or two PostgreSQL schemas. Each database is then read raw, every
table of it, for the IDs and secrets of the other region's workflows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import admin_connection, schema_of, with_options

import perdure

sys.path.insert(0, str(Path(__file__).resolve().parent))
import region_app  # noqa: E402 - tests/ made importable first

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def second_postgres_url(postgres_server: str) -> Iterator[str]:
    """Another fresh schema of the test server (a second region's database)."""
    from psycopg import sql

    schema = f"t_{uuid.uuid4().hex}"
    yield with_options(postgres_server, schema=schema)
    with admin_connection(postgres_server) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(
    params=[
        "sqlite+sqlite",
        pytest.param("sqlite+postgresql", marks=pytest.mark.postgres),
        pytest.param("postgresql+postgresql", marks=pytest.mark.postgres),
    ]
)
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The databases of two regions, ``eu`` and ``us``."""
    eu_kind, us_kind = request.param.split("+")
    eu = f"sqlite:///{tmp_path}/eu.db" if eu_kind == "sqlite" else ""
    if eu_kind == "postgresql":
        eu = request.getfixturevalue("second_postgres_url")
    us = f"sqlite:///{tmp_path}/us.db" if us_kind == "sqlite" else ""
    if us_kind == "postgresql":
        us = request.getfixturevalue("postgres_url")
    return {"eu": eu, "us": us}


@pytest.fixture
def make_app(urls: dict[str, str]) -> Iterator[Callable[..., perdure.App]]:
    """Apps on the two regions; each shut down at the end of the test."""
    apps: list[perdure.App] = []

    def make(**kwargs: Any) -> perdure.App:
        kwargs.setdefault("poll_interval", 0.05)
        kwargs.setdefault("shutdown_grace", 2.0)
        app = perdure.App(regions=urls, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        app.shutdown(grace=0.5)


def tables(url: str) -> list[str]:
    """Every table of the database (not a fixed list: a table added later counts too)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            query = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            return [row[0] for row in conn.execute(query)]
        finally:
            conn.close()
    with admin_connection(url) as conn:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
        return sorted(row[0] for row in conn.execute(query, (schema_of(url),)))


def raw_tables(url: str) -> dict[str, str]:
    """Every row of every table, as text, read straight from the database."""
    found: dict[str, str] = {}
    for table in tables(url):
        query = f"SELECT * FROM {table}"  # names from the catalog, not from input
        if url.startswith("sqlite"):
            conn = sqlite3.connect(url[len("sqlite:///") :])
            try:
                found[table] = repr(conn.execute(query).fetchall())
            finally:
                conn.close()
        else:
            with admin_connection(url, schema_of(url)) as conn:
                found[table] = repr(conn.execute(query).fetchall())
    return found


def assert_resident(urls: dict[str, str], marks: dict[str, list[str]]) -> None:
    """Each region's database holds its own marks (IDs, secrets) and none of the other's,
    in any row of any table."""
    for region, url in urls.items():
        dump = raw_tables(url)
        assert "perdure_workflows" in dump and "perdure_steps" in dump
        every = "".join(dump.values())
        for mark in marks[region]:
            assert mark in every, f"{mark!r} missing from region {region!r}"
        for other, other_marks in marks.items():
            if other == region:
                continue
            for table, text in dump.items():
                for mark in other_marks:
                    assert mark not in text, f"{other}'s {mark!r} in {region}'s {table}"


def define(app: perdure.App) -> Any:
    """A workflow with a step, a child, an event, a message it receives and a timer."""

    @app.step
    def fetch(secret: str) -> str:
        return f"record of {secret}"

    @app.workflow(name="child")
    def child(secret: str) -> str:
        return fetch(f"child {secret}")

    @app.workflow(name="parent")
    def parent(secret: str) -> str:
        record = fetch(secret)
        seen = app.start(child, secret).result()
        perdure.set_event("progress", f"half way: {secret}")
        perdure.sleep(0.01)
        reply = perdure.recv("reply", timeout=60)
        return f"{record} / {seen} / {reply}"

    return parent


def test_each_region_keeps_its_workflows_children_messages_and_events(
    make_app: Callable[..., perdure.App], urls: dict[str, str]
) -> None:
    app = make_app()
    parent = define(app)
    secrets = {region: f"secret-{region}-{uuid.uuid4().hex}" for region in urls}
    with app.launch(regions=["eu", "us"]):
        handles = {r: app.options(region=r).start(parent, secrets[r]) for r in urls}
        for region, handle in handles.items():
            # Found by looking in each region: the event, a send, a handle.
            wanted = f"half way: {secrets[region]}"
            assert app.get_event(handle.workflow_id, "progress", timeout=30) == wanted
            # The ID by keyword too: the routed methods keep their signatures.
            reply = f"reply to {secrets[region]}"
            app.send(workflow_id=handle.workflow_id, message=reply, topic="reply")
        for region, handle in handles.items():
            secret = secrets[region]
            expected = f"record of {secret} / record of child {secret} / reply to {secret}"
            assert handle.result(timeout=30) == expected
            assert app.retrieve(handle.workflow_id).result() == expected
            assert app.region(region).retrieve(handle.workflow_id).status().status == "SUCCEEDED"
            with pytest.raises(perdure.WorkflowNotFoundError):
                app.region("us" if region == "eu" else "eu").retrieve(handle.workflow_id)
            detail = app.inspect(handle.workflow_id)
            assert [c["workflow_id"] for c in detail.children] == [f"{handle.workflow_id}/1"]
        listed = {status.workflow_id for status in app.list_workflows()}
        ids = {r: h.workflow_id for r, h in handles.items()}
        assert listed == {*ids.values(), *(f"{i}/1" for i in ids.values())}
    assert_resident(urls, {r: [ids[r], secrets[r]] for r in urls})


def test_async_starts_sends_and_handles_route_by_region(
    make_app: Callable[..., perdure.App], urls: dict[str, str]
) -> None:
    app = make_app()

    @app.workflow
    async def echo(secret: str) -> str:
        reply = await perdure.recv_async("reply", timeout=60)
        return f"{secret}: {reply}"

    secrets = {region: f"async-{region}-{uuid.uuid4().hex}" for region in urls}

    async def main() -> dict[str, str]:
        handles = {r: await app.options(region=r).start_async(echo, secrets[r]) for r in urls}
        for region, handle in handles.items():
            await app.send_async(handle.workflow_id, region, topic="reply")
        results = {}
        for region, handle in handles.items():
            found = await app.retrieve_async(handle.workflow_id)
            results[region] = await found.result_async(timeout=30)
        return results

    with app.launch(regions=["eu", "us"]):
        assert asyncio.run(main()) == {r: f"{secrets[r]}: {r}" for r in urls}
    assert_resident(urls, {r: [secrets[r]] for r in urls})


def test_an_unknown_region_is_a_clear_error_naming_the_known_ones(
    make_app: Callable[..., perdure.App], urls: dict[str, str]
) -> None:
    app = make_app()
    define(app)
    for attempt in (
        lambda: app.options(region="mars"),
        lambda: app.region("mars"),
        lambda: app.launch(regions=["eu", "mars"]),
    ):
        with pytest.raises(perdure.ConfigurationError, match="'mars'.*regions are eu, us"):
            attempt()
    assert not app.launched  # nothing started when one name was wrong
    with pytest.raises(perdure.ConfigurationError, match="regions eu, us.*options\\(region="):
        app.start("parent", "no region")
    with pytest.raises(perdure.ConfigurationError, match="choose the regions"):
        app.launch()
    with pytest.raises(perdure.ConfigurationError, match="app.region\\('eu'\\)"):
        app.breakers()  # one database's operation, not routed: name the region
    with pytest.raises(perdure.ConfigurationError, match="region name 'e,u'"):
        perdure.App(regions={"e,u": urls["eu"]})
    with pytest.raises(perdure.ConfigurationError, match="non-empty mapping"):
        perdure.App(regions={})
    with pytest.raises(perdure.ConfigurationError, match="not both"):
        perdure.App(urls["eu"], regions=urls)
    with pytest.raises(perdure.ConfigurationError, match="no regions"):
        perdure.App(urls["eu"]).options(region="eu")


def test_an_id_held_by_two_regions_is_an_error_not_a_pick(
    make_app: Callable[..., perdure.App], urls: dict[str, str]
) -> None:
    app = make_app()
    parent = define(app)
    for region in urls:
        app.options(region=region, workflow_id="order-42").start(parent, region)
    for ask in (
        lambda: app.retrieve("order-42"),
        lambda: app.send("order-42", "hello", topic="reply"),
        lambda: app.cancel("order-42"),
        lambda: app.inspect("order-42"),
        lambda: app.get_event("order-42", "progress"),
    ):
        with pytest.raises(perdure.AmbiguousWorkflowError, match="regions 'eu' and 'us'"):
            ask()
    # Named, it is found, and only there.
    app.region("eu").send("order-42", "hello", topic="reply")
    assert [m.topic for m in app.region("eu").store.list_messages("order-42")] == ["reply"]
    assert app.region("us").store.list_messages("order-42") == []
    with pytest.raises(perdure.WorkflowNotFoundError):
        app.retrieve("no-such-workflow")


def test_a_child_stays_in_its_parents_region_and_another_region_is_refused(
    make_app: Callable[..., perdure.App], urls: dict[str, str]
) -> None:
    app = make_app()

    @app.workflow
    def leaf(x: int) -> int:
        return x + 1

    @app.workflow
    def stays(x: int) -> int:
        # Naming its own region is allowed: it changes nothing.
        return app.options(region="eu").start(leaf, x).result()

    @app.workflow
    def leaves(x: int) -> int:
        return app.options(region="us").start(leaf, x).result()

    with app.launch(regions=["eu", "us"]):
        kept = app.options(region="eu").start(stays, 1)
        assert kept.result(timeout=30) == 2
        refused = app.options(region="eu").start(leaves, 1)
        with pytest.raises(perdure.PerdureError, match="cannot start a child in region 'us'"):
            refused.result(timeout=30)
    assert [s.name for s in app.region("us").list_workflows()] == []
    names = sorted(s.name.rpartition(".")[2] for s in app.region("eu").list_workflows())
    assert names == ["leaf", "leaves", "stays"]


def test_listing_pages_merge_the_regions(
    make_app: Callable[..., perdure.App], urls: dict[str, str]
) -> None:
    app = make_app()
    parent = define(app)
    started = set()
    for i in range(5):
        for region in urls:
            started.add(app.options(region=region).start(parent, f"{region}{i}").workflow_id)
    seen: list[str] = []
    cursor = None
    while True:
        page = app.list_page(limit=3, cursor=cursor)
        seen += [status.workflow_id for status in page.workflows]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 10 and set(seen) == started
    # Bulk repairs act in every region; each stays in its own database.
    cancelled = app.cancel_many(name="parent")
    assert set(cancelled) == started
    assert {s.status for s in app.list_workflows()} <= {"PENDING", "RUNNING"}


def worker_env(urls: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PERDURE_EU_URL"], env["PERDURE_US_URL"] = urls["eu"], urls["us"]
    inherited = filter(None, env.get("PYTHONPATH", "").split(os.pathsep))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *map(os.path.abspath, inherited)])
    return env


def start_worker(urls: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "perdure", "worker", "region_app:app", *args],
        env=worker_env(urls),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(worker: subprocess.Popen[str]) -> str:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return err


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_worker_per_region_runs_only_its_regions_workflows(urls: dict[str, str]) -> None:
    app = region_app.build(urls)  # the workers' code, as a client here
    secrets = {region: f"worker-{region}-{uuid.uuid4().hex}" for region in urls}
    handles = {r: app.options(region=r).start("parent", secrets[r]) for r in urls}
    # Each worker is given a database it cannot open for the other region: serving
    # only its own, it never tries to.
    unreachable = "sqlite:////nonexistent-perdure-dir/never.db"
    eu = start_worker({**urls, "us": unreachable}, "--region", "eu")
    us = None
    try:
        wait_for(lambda: handles["eu"].status().status == "RUNNING", "the eu worker")
        eu_id = handles["eu"].workflow_id
        wait_for(lambda: app.get_event(eu_id, "progress") is not None, "the eu workflow")
        # The eu worker never touches the us workflow: it stays PENDING, unowned.
        time.sleep(0.5)
        status = handles["us"].status()
        assert (status.status, status.owner) == ("PENDING", None)
        us = start_worker({**urls, "eu": unreachable}, "--region", "us")
        for region, handle in handles.items():
            wait_for(
                lambda h=handle: app.get_event(h.workflow_id, "progress") is not None,
                f"the {region} workflow to wait",
            )
            app.send(handle.workflow_id, f"reply {region}", topic="reply")
        results = {r: h.result(timeout=60) for r, h in handles.items()}
    finally:
        errors = stop(eu) + (stop(us) if us is not None else "")
        app.shutdown()
    assert eu.returncode == 0 and (us is not None and us.returncode == 0), errors
    pids = {"eu": eu.pid, "us": us.pid}
    for region, result in results.items():
        assert result["parent"] == {"pid": pids[region], "secret": secrets[region]}
        assert result["child"]["pid"] == pids[region]
        assert result["reply"] == f"reply {region}"
    assert_resident(urls, {r: [handles[r].workflow_id, secrets[r]] for r in urls})


def test_the_worker_command_needs_known_regions(tmp_path: Path) -> None:
    urls = {"eu": f"sqlite:///{tmp_path}/eu.db", "us": f"sqlite:///{tmp_path}/us.db"}
    for args, expected in (
        ((), "choose the regions this process serves"),
        (("--region", "mars"), "unknown region 'mars': this app's regions are eu, us"),
    ):
        worker = start_worker(urls, *args)
        try:
            _, err = worker.communicate(timeout=60)  # it exits by itself
        finally:
            stop(worker)
        assert worker.returncode == 1 and expected in err, err


def test_erase_and_gc_act_in_each_region_and_keep_it_there(
    make_app: Callable[..., perdure.App], urls: dict[str, str]
) -> None:
    app = make_app()
    parent = define(app)
    secrets = {region: f"erase-{region}-{uuid.uuid4().hex}" for region in urls}
    with app.launch(regions=["eu", "us"]):
        handles = {
            r: app.options(region=r, subjects=["carol"]).start(parent, secrets[r]) for r in urls
        }
        # eu finishes; us still waits: us refuses, eu is erased, and the error says so.
        app.send(handles["eu"].workflow_id, "bye", topic="reply")
        handles["eu"].result(timeout=30)
        with pytest.raises(perdure.ErasureRefusedError, match="other regions were erased"):
            app.erase("carol")
        app.send(handles["us"].workflow_id, "bye", topic="reply")
        handles["us"].result(timeout=30)
        erased = app.erase("carol")
    ids = {r: h.workflow_id for r, h in handles.items()}
    assert set(erased) == {*ids.values(), *(f"{i}/1" for i in ids.values())}
    for region, url in urls.items():
        every = "".join(raw_tables(url).values())
        assert ids[region] in every and "perdure.erased" in every
        assert not any(secret in every for secret in secrets.values())
    with pytest.raises(perdure.SerializationError, match="erased"):
        app.retrieve(ids["us"]).result()
    time.sleep(0.01)
    deleted = app.gc(older_than=0.001)
    assert sorted(tree[0] for tree in deleted.trees) == sorted(ids.values())
    assert app.list_workflows() == []


def test_the_http_api_starts_in_a_region_and_finds_workflows_in_theirs(
    make_app: Callable[..., perdure.App], urls: dict[str, str]
) -> None:
    httpx = pytest.importorskip("httpx")
    from test_web_api import TOKEN, serving

    app = make_app()
    define(app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        app.launch(regions=["eu", "us"]),
        serving(app) as base,
        httpx.Client(base_url=base, headers=headers) as http,
    ):
        ids = {}
        for region in urls:
            body = {"name": "parent", "args": [f"http-{region}"], "region": region}
            started = http.post("/api/workflows", json=body)
            assert started.status_code == 202, started.text
            ids[region] = started.json()["workflow_id"]
        for region, workflow_id in ids.items():
            sent = http.post(
                f"/api/workflows/{workflow_id}/send",
                json={"message": region, "topic": "reply"},
            )
            assert sent.status_code == 202, sent.text
            assert app.retrieve(workflow_id).result(timeout=30).endswith(f"/ {region}")
            found = http.get(f"/api/workflows/{workflow_id}").json()
            assert found["status"] == "SUCCEEDED"
            messages = http.get(f"/api/workflows/{workflow_id}/messages").json()
            assert region in [m["payload"] for m in messages["messages"]]
        listed = http.get("/api/workflows", params={"name": "parent"}).json()
        assert {w["workflow_id"] for w in listed["workflows"]} == set(ids.values())
        unknown = http.post("/api/workflows", json={"name": "parent", "region": "mars"})
        assert unknown.status_code == 400
        assert "regions are eu, us" in unknown.json()["error"]
    assert_resident(urls, {r: [ids[r], f"http-{r}"] for r in urls})


def test_the_commands_find_workflows_in_their_region_or_in_the_one_named(
    tmp_path: Path,
) -> None:
    urls = {"eu": f"sqlite:///{tmp_path}/eu.db", "us": f"sqlite:///{tmp_path}/us.db"}
    app = region_app.build(urls)
    ids = {r: app.options(region=r, workflow_id=f"order-{r}").start("parent", r) for r in urls}
    app.shutdown()

    def perdure_(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "perdure", *args]
        return subprocess.run(
            command, env=worker_env(urls), capture_output=True, text=True, timeout=60
        )

    listed = perdure_("list", "--app", "region_app:app")
    assert listed.returncode == 0 and "order-eu" in listed.stdout and "order-us" in listed.stdout
    one = perdure_("--region", "eu", "list", "--app", "region_app:app")
    assert "order-eu" in one.stdout and "order-us" not in one.stdout, one.stdout + one.stderr
    found = perdure_("status", "order-us", "--app", "region_app:app")
    assert found.returncode == 0 and "order-us" in found.stdout, found.stderr
    elsewhere = perdure_("--region", "eu", "status", "order-us", "--app", "region_app:app")
    assert elsewhere.returncode == 1 and "no workflow with ID 'order-us'" in elsewhere.stderr
    cancelled = perdure_("cancel", "order-eu", "--app", "region_app:app")
    assert cancelled.returncode == 0, cancelled.stderr
    assert app.region("eu").retrieve("order-eu").status().cancel_requested_at is not None
    assert app.region("us").retrieve("order-us").status().cancel_requested_at is None
    unrouted = perdure_("breakers", "--app", "region_app:app")
    assert unrouted.returncode == 1 and "perdure --region eu" in unrouted.stderr
    assert set(ids) == {"eu", "us"}
    app.shutdown()


def test_a_schedule_in_code_fires_in_each_served_region_into_its_database(
    tmp_path: Path,
) -> None:
    urls = {"eu": f"sqlite:///{tmp_path}/eu.db", "us": f"sqlite:///{tmp_path}/us.db"}
    app = perdure.App(regions=urls, poll_interval=0.05, shutdown_grace=1.0)

    @app.schedule("* * * * * *", name="tick")
    def tick(at: Any) -> str:
        return str(at)

    def ticks(region: str) -> list[str]:
        found = app.region(region).list_workflows(status="SUCCEEDED")
        return [s.workflow_id for s in found if s.workflow_id.startswith("schedule:tick:")]

    with app.launch(regions=["eu"]):
        wait_for(lambda: bool(ticks("eu")), "a tick in eu", timeout=10)
    assert ticks("us") == []  # no worker served us: nothing fired there
    with app.launch(regions=["us"]):
        wait_for(lambda: bool(ticks("us")), "a tick in us", timeout=10)
    app.shutdown()
