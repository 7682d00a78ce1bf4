"""Retention, erasure and the audit trail (issue 14), on both stores, the database read
raw afterwards: ``app.gc`` / ``perdure gc`` and ``App(retention=...)`` applied by one
worker at a time; ``app.erase`` / ``perdure erase``; ``app.audit_log`` / ``perdure audit``."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from click.testing import CliRunner
from compliance_helpers import TABLES, define_everything, raw_dump, raw_rows
from conftest import OffsetClock
from test_web_api import TOKEN, serving

import perdure
from perdure._cli import cli
from perdure._display import error_summary
from perdure._model import ERASED


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def define_tree(app: perdure.App) -> tuple[Callable[..., str], Callable[..., str]]:
    @app.step
    def note(text: str) -> str:
        return text

    @app.workflow(name="leaf")
    def leaf(text: str) -> str:
        return note(f"leaf {text}")

    @app.workflow(name="root")
    def root(text: str, fail: bool = False) -> str:
        perdure.set_event("seen", text)
        got = app.start(leaf, text).result()
        if fail:
            raise RuntimeError(f"failed {text}")
        return got

    @app.workflow(name="waiter")
    def waiter() -> object:
        return perdure.recv(timeout=60)

    return root, waiter


def ids(url: str) -> list[str]:
    return sorted(row[0] for row in raw_rows(url, "perdure_workflows", columns="id"))


def test_gc_deletes_old_finished_trees_whole_and_logs_them(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    clock = OffsetClock(-10 * 86400)  # the old workflows finish ten days ago
    old = make_app(clock=clock)
    root, waiter = define_tree(old)
    with old:
        old.options(workflow_id="ok").run(root, "a")
        with pytest.raises(RuntimeError):
            old.options(workflow_id="bad").run(root, "b", fail=True)
        old.options(workflow_id="waits").start(waiter)
        wait_for(lambda: old.retrieve("waits").status().status == "RUNNING")
    app = make_app()
    define_tree(app)
    with app:
        app.options(workflow_id="recent").run(root, "c")
    before = ids(database_url)
    assert before == ["bad", "bad/1", "ok", "ok/1", "recent", "recent/1", "waits"]

    dry = app.gc(older_than=timedelta(days=7), dry_run=True, actor="ops")
    assert dry.dry_run and sorted(dry.trees) == [["bad", "bad/1"], ["ok", "ok/1"]]
    assert ids(database_url) == before
    only_failed = app.gc(older_than=7 * 86400, statuses="failed", actor="ops")
    assert only_failed.trees == [["bad", "bad/1"]] and only_failed.workflows == 2
    # The CLI: a dry run, then the deletion.
    runner = CliRunner()
    args = ["gc", "--older-than", "7d", "--database-url", database_url, "--actor", "cron"]
    shown = runner.invoke(cli, [*args, "--dry-run"])
    assert shown.exit_code == 0, shown.output
    assert "workflow ok: would delete (and 1 descendant(s))" in shown.output
    assert ids(database_url) == ["ok", "ok/1", "recent", "recent/1", "waits"]
    done = runner.invoke(cli, args)
    assert done.exit_code == 0 and "workflow ok: deleted" in done.output, done.output
    # Active and recent workflows stay; nothing of the deleted ones is left in any table.
    assert ids(database_url) == ["recent", "recent/1", "waits"]
    for table in ("perdure_steps", "perdure_messages", "perdure_events"):
        owners = {row[0] for row in raw_rows(database_url, table, columns="workflow_id")}
        assert owners <= {"recent", "recent/1", "waits"}, (table, owners)
    entries = app.audit_log(action="gc")
    assert [(e.workflow_id, e.actor, e.details["deleted"]) for e in entries] == [
        ("bad", "ops", ["bad", "bad/1"]),
        ("ok", "cron", ["ok", "ok/1"]),
    ]
    listed = runner.invoke(cli, ["audit", "--database-url", database_url, "--action", "gc"])
    assert listed.exit_code == 0 and listed.output.count(" gc ") == 2, listed.output
    with pytest.raises(perdure.InvalidValueError, match="only finished workflows"):
        app.gc(older_than=1, statuses=["RUNNING"])


def test_retention_is_applied_by_one_worker_at_a_time(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    # Old workflows, run by an app of their own version (the workers below cannot take
    # them: they finish an hour ago by this app's clock).
    clock = OffsetClock(-3600)
    old = make_app(clock=clock, app_version="old")
    root, _ = define_tree(old)
    with old:
        for n in range(5):
            old.options(workflow_id=f"old-{n}").run(root, str(n))
    policy = perdure.Retention(older_than=600, batch=2, interval=0.2)
    workers = [make_app(retention=policy, lease_seconds=1.0) for _ in range(2)]
    for worker in workers:
        define_tree(worker)
        worker.launch()
    wait_for(lambda: ids(database_url) == [])
    entries = workers[0].audit_log(action="gc")
    assert sorted(e.workflow_id for e in entries) == [f"old-{n}" for n in range(5)]
    # One worker held the lease the whole time: every batch was deleted by the same one.
    (holder,) = {e.actor for e in entries}
    assert holder.startswith("perdure-worker:")
    # The holder stops: once its lease expired, the other worker takes over.
    stopped = next(w for w in workers if w.executor and holder.endswith(w.executor.id))
    stopped.shutdown()
    with old:
        old.options(workflow_id="later").run(root, "x")
    wait_for(lambda: ids(database_url) == [])
    (last,) = workers[0].audit_log(action="gc", after=entries[-1].seq)
    assert last.workflow_id == "later" and last.actor != holder
    with pytest.raises(perdure.InvalidValueError):
        perdure.Retention(older_than=0)
    with pytest.raises(perdure.ConfigurationError, match="perdure.Retention"):
        perdure.App(database_url, retention=timedelta(days=1))


def test_erasing_a_subject_leaves_none_of_its_data(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app()
    everything = define_everything(app, "alice-secret")
    with app:
        tagged = app.options(workflow_id="a", subjects=["alice"]).start(everything, "alice-secret")
        other = app.options(workflow_id="b", subjects=["bob"]).start(everything, "bob-secret")
        assert app.get_event("a", "profile", timeout=30) == {"who": "alice-secret"}
        # Active: refused, nothing erased.
        with pytest.raises(perdure.ErasureRefusedError, match="nothing was erased") as refused:
            app.erase("alice", actor="dpo")
        assert refused.value.active == ["a"]
        cli_refused = CliRunner().invoke(cli, ["erase", "alice", "--database-url", database_url])
        assert cli_refused.exit_code == 1, cli_refused.output
        assert "nothing was erased" in cli_refused.output, cli_refused.output
        app.send("a", "reply alice-secret", topic="reply", actor="ops")
        app.send("b", "reply bob-secret", topic="reply")
        tagged.result(timeout=30)
        other.result(timeout=30)
        # A fork copies the inputs and the first step: it holds alice's data too.
        forked = app.fork("a", from_step=1, workflow_id="a-fork", actor="ops")
        app.send("a-fork", "reply alice-secret", topic="reply")
        forked.result(timeout=30)
    assert "alice-secret" in raw_dump(database_url)

    erased = app.erase("alice", actor="dpo")
    # The tagged workflow, its child, its fork and the fork's child.
    assert erased == ["a", "a-fork", "a-fork/1", "a/1"]
    tables = repr([raw_rows(database_url, table) for table in TABLES])
    assert "alice-secret" not in tables
    assert "bob-secret" in tables  # another subject's data stays
    # On SQLite, not even in the file's free space or its WAL.
    assert "alice-secret" not in raw_dump(database_url)
    # Structure and times stay.
    record = app.retrieve("a").status()
    assert record.status == "SUCCEEDED" and len(record.steps) >= 4
    assert error_summary(ERASED) == "<erased>"  # how status views show an erased error
    with pytest.raises(perdure.SerializationError, match="erased"):
        app.retrieve("a").result(timeout=5)
    assert [e.workflow_id for e in app.audit_log(action="erase")] == erased
    assert {e.actor for e in app.audit_log(action="erase")} == {"dpo"}
    # Again: the same workflows, nothing more to replace. The CLI says so.
    result = CliRunner().invoke(cli, ["erase", "alice", "--database-url", database_url])
    assert result.exit_code == 0 and "workflow a: erased" in result.output, result.output
    assert "bob-secret" in repr(raw_rows(database_url, "perdure_workflows"))


def test_subjects_are_checked_and_a_child_cannot_have_its_own(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="kid")
    def kid() -> str:
        return "kid"

    @app.workflow(name="tags_a_child")
    def tags_a_child() -> str:
        return app.options(subjects=["x"]).start(kid).result()

    with pytest.raises(perdure.InvalidValueError):
        app.options(subjects=[""])
    assert app.options(subjects="u1").options.subjects == ("u1",)
    with app, pytest.raises(perdure.ConfigurationError, match="erased with its parent"):
        app.run(tags_a_child)
    assert app.store.workflow_subjects(app.list_workflows()[0].workflow_id) == []


def test_workflows_started_in_a_queue_are_tagged_and_erased_too(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app(queues=[perdure.Queue("mail", concurrency=1)])

    @app.workflow(name="mail")
    def mail(text: str) -> str:
        return f"sent {text}"

    with app:
        queued = app.options(queue="mail", key="c1", subjects=["carol"]).start(mail, "carol-secret")
        delayed = app.options(delay=0.01, subjects=["carol"]).start(mail, "carol-later")
        assert queued.result(timeout=30) == "sent carol-secret"
        assert delayed.result(timeout=30) == "sent carol-later"
    assert app.store.workflow_subjects(queued.workflow_id) == ["carol"]
    assert app.store.workflow_subjects(delayed.workflow_id) == ["carol"]
    assert sorted(app.erase("carol")) == sorted([queued.workflow_id, delayed.workflow_id])
    assert "carol-" not in repr([raw_rows(database_url, table) for table in TABLES])


def test_every_operator_action_is_in_the_audit_log(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app()
    _, waiter = define_tree(app)
    with app:
        app.options(workflow_id="w").start(waiter)
        app.send("w", 1, actor="ops")
        wait_for(lambda: app.retrieve("w").status().status == "SUCCEEDED")
        app.options(workflow_id="c").start(waiter)
        app.cancel("c", actor="ops")
        wait_for(lambda: app.retrieve("c").status().status == "CANCELLED")
        app.resume("c", actor="ops")
        app.cancel("c", actor="ops")
        app.fork("w", 0, workflow_id="w2", actor="ops")
        app.restart("w", workflow_id="w3", actor="ops")
        app.open_breaker("svc", 60, actor="ops")
        app.close_breaker("svc", actor="ops")
        assert not app.retry_held("w", actor="ops")  # not held: nothing to log
    app.erase("nobody", actor="ops")
    app.gc(older_than=3600, actor="ops")
    actions = {entry.action for entry in app.audit_log(limit=1000)}
    assert {
        "send",
        "cancel",
        "resume",
        "fork",
        "restart",
        "open_breaker",
        "close_breaker",
    } <= actions
    assert all(entry.actor == "ops" for entry in app.audit_log(limit=1000))
    page = app.audit_log(limit=2)
    assert [e.seq for e in app.audit_log(after=page[-1].seq, limit=1)] == [page[-1].seq + 1]
    only_c = app.audit_log(workflow_id="c")
    assert [e.action for e in only_c] == ["cancel", "resume", "cancel"]
    with pytest.raises(perdure.InvalidValueError, match="unknown action"):
        app.audit_log(action="delete")
    listed = CliRunner().invoke(
        cli, ["audit", "--database-url", database_url, "--workflow", "c", "--json"]
    )
    assert listed.exit_code == 0 and listed.output.count('"action": ') == 3, listed.output


def test_the_http_api_tags_erases_and_lists_the_audit_trail(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    _, waiter = define_tree(app)
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Perdure-Actor": "dpo"}
    with app, serving(app) as base, httpx.Client(base_url=base, headers=headers) as http:
        started = http.post(
            "/api/workflows", json={"name": "waiter", "workflow_id": "w", "subjects": ["carol"]}
        )
        assert started.status_code == 202, started.text
        assert app.store.workflow_subjects("w") == ["carol"]
        refused = http.post("/api/subjects/carol/erase", json={})
        assert refused.status_code == 409 and refused.json()["type"] == "ErasureRefusedError"
        app.send("w", "carol's message")
        app.retrieve("w").result(timeout=30)
        erased = http.post("/api/subjects/carol/erase", json={})
        assert erased.status_code == 200 and erased.json()["erased"] == ["w"]
        listed = http.get("/api/audit", params={"action": "erase"}).json()["actions"]
        assert [(a["workflow_id"], a["actor"]) for a in listed] == [("w", "http:dpo")]
        assert listed[0]["details"] == {"subject": "carol"}
