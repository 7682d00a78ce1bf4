"""A workflow's end pushes its ``done`` event on PostgreSQL only when a process that does
not run it waits for it (``Store.watch_workflows``): PostgreSQL commits transactions that
notify one at a time, server wide (docs/scaling.md), so a busy worker's commits push
nothing that nobody waits for."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from test_storage import _heard, _listening, _one_batch, new, step

from perdure import App
from perdure.storage import Lease, open_store

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("form", ["alone", "batch", "with-record", "mixed-batch"])
def test_postgres_only_a_watched_workflow_pushes_its_end(postgres_url: str, form: str) -> None:
    """In every form of the outcome's statement (alone; with other outcomes; with the
    last step's record, alone; with other workflows' records), the outcome of a watched
    workflow pushes its event and that of an unwatched one does not; both are recorded."""
    store = open_store(postgres_url)
    lease = Lease("me", 1)
    try:
        store.migrate()
        events = _listening(store)
        for name in ("seen", "unseen", "other"):
            store.create_workflow(new(name), "me", 500.0).result()
        found = store.watch_workflows(["seen", "missing"])
        assert set(found) == {"seen"} and found["seen"].status == "RUNNING"
        steps = [step("0")] if form in ("with-record", "mixed-batch") else []

        def complete(name: str) -> Any:
            return store.complete_workflow(name, lease, "SUCCEEDED", "1", None, 300.0, steps=steps)

        if form in ("alone", "with-record"):
            futures = [complete("seen"), complete("unseen")]
        else:
            with _one_batch(store):
                futures = [complete("seen"), complete("unseen")]
                if form == "mixed-batch":
                    futures.append(store.record_step("other", lease, step("0")))
        assert all(future.result(timeout=10) for future in futures)
        for name in ("seen", "unseen"):
            record = store.get_workflow(name)
            assert record is not None and record.status == "SUCCEEDED"
            assert len(store.load_steps(name)) == len(steps)
        _heard(events, pushed=["seen"], not_pushed=["unseen"])
    finally:
        store.close()


@pytest.mark.parametrize("form", ["alone", "batch", "with-record", "mixed-batch"])
def test_postgres_an_end_is_pushed_unless_the_executor_whose_process_waits_records_it(
    postgres_url: str, form: str
) -> None:
    """A waiter in a process with an executor marks the workflow with that executor's ID:
    an outcome recorded by that executor pushes nothing (its process hears it from its
    own executor); recorded by another one, it pushes. A waiter without an executor, or
    a second executor's waiter, marks it for every outcome. In every form of the
    outcome's statement."""
    store = open_store(postgres_url)
    lease = Lease("me", 1)  # the executor that records every outcome below
    try:
        store.migrate()
        events = _listening(store)
        names = ("mine", "theirs", "nobodys", "twice", "other")
        for name in names:
            store.create_workflow(new(name), "me", 500.0).result()
        assert set(store.watch_workflows(["mine"], "me")) == {"mine"}
        store.watch_workflows(["theirs"], "executor-2")
        store.watch_workflows(["nobodys"])  # a client's waiter
        store.watch_workflows(["twice"], "me")
        store.watch_workflows(["twice"], "executor-2")  # a second process waits too
        steps = [step("0")] if form in ("with-record", "mixed-batch") else []

        def complete(name: str) -> Any:
            return store.complete_workflow(name, lease, "SUCCEEDED", "1", None, 300.0, steps=steps)

        ends = ("mine", "theirs", "nobodys", "twice")
        if form in ("alone", "with-record"):
            futures = [complete(name) for name in ends]
        else:
            with _one_batch(store):
                futures = [complete(name) for name in ends]
                if form == "mixed-batch":
                    futures.append(store.record_step("other", lease, step("0")))
        assert all(future.result(timeout=10) for future in futures)
        for name in ends:
            record = store.get_workflow(name)
            assert record is not None and record.status == "SUCCEEDED"
        _heard(events, pushed=["theirs", "nobodys", "twice"], not_pushed=["mine"])
    finally:
        store.close()


def test_postgres_starts_past_max_workflows_waited_for_here_push_nothing(
    postgres_url: str,
) -> None:
    """A launched app that starts more workflows than it runs at once records the rest
    unowned, and its handles mark them as they wait; its own executor claims and ends
    them: nothing is pushed (each such end used to push, committing one flush at a time
    server wide)."""
    app = App(postgres_url, max_workflows=2)
    gate = threading.Event()

    @app.workflow(name="held")
    def held(n: int) -> int:
        gate.wait(10)
        return n

    try:
        with app:
            events = _listening(app.store)
            handles = [app.start("held", n, workflow_id=f"held-{n}") for n in range(6)]
            records = app.store.get_workflows([h.workflow_id for h in handles])
            unowned = [i for i, record in records.items() if record.owner is None]
            assert len(unowned) >= 4, unowned  # two run, the rest wait for a slot
            last = handles[-1].workflow_id
            assert last in unowned
            results: dict[str, int] = {}
            waiting = threading.Thread(  # the last first: it waits for a slot, unmarked yet
                target=lambda: results.update(
                    (h.workflow_id, h.result(timeout=20)) for h in reversed(handles)
                )
            )
            waiting.start()
            for _ in range(200):  # until the waiter marked it
                if _marks(app, last) != (0, None):
                    break
                time.sleep(0.05)
            assert _marks(app, last) == (0, app.executor_id)
            gate.set()
            waiting.join(20)
            assert results == {f"held-{n}": n for n in range(6)}
            _heard(events, pushed=[], not_pushed=[h.workflow_id for h in handles])
            assert all(_marks(app, i)[0] == 0 for i in unowned)
    finally:
        gate.set()


def test_postgres_a_waiter_in_another_app_is_pushed_the_end_and_a_local_one_is_not(
    postgres_url: str,
) -> None:
    """A client that does not run the workflow marks it when it waits, and its end is
    pushed to it; a workflow started and waited for where it runs pushes nothing."""
    worker, client = App(postgres_url), App(postgres_url)
    gate = threading.Event()

    for app in (worker, client):

        @app.workflow(name="held")
        def held(n: int) -> int:
            if n == 2:
                gate.wait(10)
            return n

    try:
        with worker:
            events = _listening(client.store)  # the client's listener hears from here on
            assert worker.run("held", 1, workflow_id="local") == 1
            handle = client.start("held", 2, workflow_id="remote")
            results: list[int] = []
            waiting = threading.Thread(target=lambda: results.append(handle.result(timeout=10)))
            waiting.start()
            for _ in range(200):  # until the client waits, the workflow marked by it
                if _watched(client, "remote"):
                    break
                time.sleep(0.05)
            assert _watched(client, "remote")
            assert not _watched(client, "local")
            gate.set()
            waiting.join(10)
            assert results == [2]
            _heard(events, pushed=["remote"], not_pushed=["local"])
    finally:
        gate.set()
        client.shutdown()


def _marks(app: App, workflow_id: str) -> tuple[int, str | None]:
    rows = app.store._read(  # type: ignore[attr-defined]
        "SELECT watched, watcher FROM perdure_workflows WHERE id = %s", (workflow_id,)
    )
    return tuple(rows[0])  # type: ignore[return-value]


def _watched(app: App, workflow_id: str) -> bool:
    rows = app.store._read(  # type: ignore[attr-defined]
        "SELECT watched FROM perdure_workflows WHERE id = %s", (workflow_id,)
    )
    return bool(rows == [(1,)])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_postgres_a_start_nobody_here_runs_is_marked_at_the_first_look_not_read(
    postgres_url: str, mode: str
) -> None:
    """The handle of a start that no executor of this process owns marks the workflow at
    its result's first look, in place of the read (no read and then a mark)."""
    worker, client = App(postgres_url), App(postgres_url)
    for app in (worker, client):

        @app.workflow(name="quick")
        def quick(n: int) -> int:
            return n

    calls: list[str] = []
    store: Any = client.store
    for name in ("get_workflow", "get_workflows", "watch_workflows"):
        method = getattr(store, name)

        def spy(*args: Any, _name: str = name, _method: Any = method) -> Any:
            calls.append(_name)
            return _method(*args)

        setattr(store, name, spy)
    try:
        with worker:
            if mode == "sync":
                assert client.start("quick", 3).result(timeout=10) == 3
            else:

                async def main() -> int:
                    handle = await client.start_async("quick", 4)
                    result: int = await handle.result_async(timeout=10)
                    return result

                assert asyncio.run(main()) == 4
        assert calls and calls[0] == "watch_workflows", calls
    finally:
        client.shutdown()
