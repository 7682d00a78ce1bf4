"""Listing workflows by queue and key (issue 12): the app's ``list_workflows`` and
``list_page``, on an app with regions too, ``perdure list --queue --key``, the HTTP API's
``?queue=&key=``, each page an index range; and ``perdure queues``. On both stores."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import admin_connection, schema_of
from test_web_api import TOKEN, serving

import perdure
from perdure._cli import cli
from perdure.storage import open_store
from perdure.storage._queries import list_query

QUEUES = [perdure.Queue("emails", concurrency=2), perdure.Queue("sms")]


def define(app: perdure.App) -> Callable[..., Any]:
    @app.workflow(name="send")
    def send(to: str) -> str:
        return to

    return send


def start_some(app: perdure.App) -> None:
    """Queued workflows (no worker runs them): e1..e3 in emails, s1 in sms, p1 in none."""
    send = define(app)
    for workflow_id, queue, key in [
        ("e1", "emails", "alice"),
        ("e2", "emails", "bob"),
        ("e3", "emails", "alice"),
        ("s1", "sms", "alice"),
    ]:
        app.options(workflow_id=workflow_id, queue=queue, key=key).start(send, workflow_id)
    app.options(workflow_id="p1").start(send, "p1")


def test_the_app_lists_by_queue_and_key_a_page_at_a_time(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app(queues=QUEUES)
    start_some(app)
    ids = lambda statuses: [s.workflow_id for s in statuses]  # noqa: E731
    assert ids(app.list_workflows(queue="emails")) == ["e3", "e2", "e1"]
    assert ids(app.list_workflows(queue="emails", key="alice")) == ["e3", "e1"]
    assert ids(app.list_workflows(queue="sms", key="bob")) == []
    first = app.list_page(queue="emails", key="alice", limit=1)
    assert ids(first.workflows) == ["e3"] and first.next_cursor is not None
    second = app.list_page(queue="emails", key="alice", limit=1, cursor=first.next_cursor)
    assert ids(second.workflows) == ["e1"] and second.next_cursor is None
    assert ids(app.list_page(queue="emails", status="pending").workflows) == ["e3", "e2", "e1"]
    # A key is a queue's: without its queue it is refused, saying what to do.
    with pytest.raises(perdure.InvalidValueError, match="without a queue"):
        app.list_page(key="alice")
    with pytest.raises(perdure.InvalidValueError, match="without a queue"):
        app.list_workflows(key="alice")


def test_listing_by_queue_merges_the_regions(tmp_path: Path) -> None:
    urls = {region: f"sqlite:///{tmp_path}/{region}.db" for region in ("eu", "us")}
    app = perdure.App(regions=urls, queues=QUEUES)
    send = define(app)
    try:
        for n, region in enumerate(["eu", "us", "eu"]):
            starter = app.options(region=region, queue="emails", key="k", workflow_id=f"r{n}")
            starter.start(send, str(n))
        app.options(region="us", queue="sms", key="k", workflow_id="other").start(send, "x")
        listed = app.list_workflows(queue="emails", key="k")
        assert [s.workflow_id for s in listed] == ["r2", "r1", "r0"]
        page = app.list_page(queue="emails", limit=2)
        assert [s.workflow_id for s in page.workflows] == ["r2", "r1"]
        rest = app.list_page(queue="emails", limit=2, cursor=page.next_cursor)
        assert [s.workflow_id for s in rest.workflows] == ["r0"] and rest.next_cursor is None
    finally:
        app.shutdown(grace=0.5)


@pytest.mark.parametrize(
    "filters",
    [
        {"queue": "q1"},
        {"queue": "q1", "key": "k3"},
        {"queue": "q1", "after": (5000.0, "w5000")},
        {"queue": "q1", "key": "k3", "after": (5000.0, "w5000")},
    ],
)
def test_listing_by_queue_is_an_index_range(database_url: str, filters: dict[str, Any]) -> None:
    """By queue, and by queue and key, on any page: an index range, no scan, no sort."""
    store = open_store(database_url)
    store.migrate()
    store.close()
    args = (None, None, None, None, 50, True, filters.get("after"))
    extra = {"queue": filters["queue"], "key": filters.get("key")}
    if database_url.startswith("postgresql"):
        query, params = list_query("%s", *args, **extra)
        with admin_connection(database_url, schema_of(database_url)) as conn:
            # A table of realistic size and statistics (on a few rows a scan is cheapest),
            # where a queue holds a small share of the workflows.
            conn.execute(
                "INSERT INTO perdure_workflows (id, name, status, inputs, serializer, "
                "app_version, epoch, created_at, updated_at, queue, queue_key) "
                "SELECT 'w' || i, 'send', (ARRAY['PENDING', 'RUNNING', 'SUCCEEDED'])[i % 3 + 1], "
                "'{}', 'json', '1', 0, i, i, "
                "CASE WHEN i % 2 = 0 THEN NULL ELSE 'q' || (i % 5) END, 'k' || (i % 4) "
                "FROM generate_series(1, 20000) AS i"
            )
            conn.execute("ANALYZE perdure_workflows")
            rows = conn.execute(f"EXPLAIN {query}", params).fetchall()  # type: ignore[call-overload]
        plan = " | ".join(row[0] for row in rows)
        # The planner picks by cost: the queue's index, or (for a queue that holds many of
        # the workflows) the creation index's range, filtered; never a scan or a sort.
        assert "Index" in plan and "Sort" not in plan and "Seq Scan" not in plan, plan
        if "key" in filters:
            assert "perdure_workflows_queue_key_created" in plan, plan
        return
    sql, params = list_query("?", *args, **extra)
    with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as conn:
        plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "perdure_workflows_queue" in plan and "TEMP B-TREE" not in plan, plan


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_perdure_list_and_the_api_filter_by_queue_and_key(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app(queues=QUEUES)
    start_some(app)
    listed = invoke(
        "list", "--database-url", database_url, "--queue", "emails", "--key", "alice", "--json"
    )
    assert [w["workflow_id"] for w in json.loads(listed.stdout)["workflows"]] == ["e3", "e1"]
    plain = invoke("list", "--database-url", database_url, "--queue", "sms")
    assert "s1" in plain.stdout and "e1" not in plain.stdout
    refused = CliRunner().invoke(cli, ["list", "--database-url", database_url, "--key", "x"])
    assert refused.exit_code != 0 and "without a queue" in refused.output
    with serving(app) as base:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        found = httpx.get(
            f"{base}/api/workflows", params={"queue": "emails", "key": "bob"}, headers=auth
        )
        assert found.status_code == 200
        assert [w["workflow_id"] for w in found.json()["workflows"]] == ["e2"]
        bad = httpx.get(f"{base}/api/workflows", params={"key": "bob"}, headers=auth)
        assert bad.status_code == 400 and "without a queue" in bad.text
        app.update_queue("sms", concurrency=3, actor="api-test")
        audit = httpx.get(f"{base}/api/audit", params={"queue": "sms"}, headers=auth)
        assert [(a["action"], a["actor"], a["workflow_id"]) for a in audit.json()["actions"]] == [
            ("update_queue", "api-test", "perdure.queue:sms")
        ]


def test_perdure_queues_lists_limits_and_counts_and_updates_limits(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app(queues=QUEUES)
    start_some(app)
    app.update_queue("sms", key_concurrency=1, actor="setup")  # stores sms's limits
    listed = json.loads(invoke("queues", "--database-url", database_url, "--json").stdout)
    assert listed == [
        {
            "name": "sms",
            "concurrency": None,
            "worker_concurrency": None,
            "key_concurrency": 1,
            "rate": None,
            "running": 0,
            "waiting": 1,
            "delayed": 0,
            "stored": True,
        }
    ]
    # With the app, its declared queues show before a worker stored them.
    assert [q.limits.name for q in app.queues()] == ["emails", "sms"]
    assert app.queues()[0].depth.waiting == 3 and not app.queues()[0].stored
    changed = invoke(
        "queues",
        "--database-url",
        database_url,
        "--update",
        "sms",
        "--concurrency",
        "4",
        "--rate",
        "10/60",
        "--key-concurrency",
        "none",
        "--actor",
        "ops-bob",
    )
    assert "queue sms updated" in changed.stderr
    assert (
        "sms  concurrency=4  per worker=-  per key=-  rate=10/60s  running=0  waiting=1"
        in changed.stdout
    )
    assert app.queue("sms") == perdure.Queue("sms", concurrency=4, rate=perdure.Rate(10, 60))
    [entry] = app.audit_log(queue="sms", action="update_queue", after=1)
    assert (entry.actor, entry.workflow_id) == ("ops-bob", "perdure.queue:sms")
    assert entry.details["after"]["concurrency"] == 4
    audit = invoke("audit", "--database-url", database_url, "--queue", "sms")
    assert "setup  update_queue  perdure.queue:sms" in audit.stdout
    assert "ops-bob  update_queue  perdure.queue:sms" in audit.stdout
    for bad in (["--concurrency", "0"], ["--rate", "ten"]):
        refused = CliRunner().invoke(
            cli, ["queues", "--database-url", database_url, "--update", "sms", *bad]
        )
        assert refused.exit_code != 0
    refused = CliRunner().invoke(
        cli, ["queues", "--database-url", database_url, "--concurrency", "3"]
    )
    assert refused.exit_code != 0 and "needs --update" in refused.output
    unknown = CliRunner().invoke(
        cli, ["queues", "--database-url", database_url, "--update", "nope", "--concurrency", "3"]
    )
    assert unknown.exit_code != 0 and "no queue named 'nope'" in unknown.output
