"""Start options as a value: ``app.options(workflow_id=..., timeout=...)``, and the older
keyword form that ``app.start`` still takes."""

from __future__ import annotations

import dataclasses
import logging

import pytest

import perdure
from perdure._options import StartOptions


def test_options_are_a_frozen_value() -> None:
    options = StartOptions(workflow_id="w", timeout=2.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.workflow_id = "v"  # type: ignore[misc]
    assert dataclasses.replace(options, timeout=None) == StartOptions(workflow_id="w")
    kwargs = {"workflow_id": "x", "timeout": 1, "key": "mine"}
    # Only the older keywords are taken out of a workflow's keyword arguments.
    assert StartOptions.pop_legacy(kwargs) == StartOptions("x", 1)
    assert kwargs == {"key": "mine"}


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "5", True])
def test_a_timeout_must_be_positive_finite_seconds(app: perdure.App, timeout: object) -> None:
    with pytest.raises(perdure.InvalidValueError, match="^timeout must be a finite number"):
        app.options(timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("workflow_id", ["", 42, "a\x00b", "x" * 1001])
def test_a_workflow_id_must_follow_the_rule(app: perdure.App, workflow_id: object) -> None:
    # An empty ID was silently replaced by a random one (a repeated start was then no
    # longer idempotent); an int was accepted; a NUL failed only on PostgreSQL.
    with pytest.raises(perdure.InvalidValueError, match="^workflow_id"):
        app.options(workflow_id=workflow_id)  # type: ignore[arg-type]
    with pytest.raises(perdure.InvalidValueError, match="^workflow_id"):
        app.start("double", 1, workflow_id=workflow_id)


def test_options_start_run_and_their_async_forms(app: perdure.App) -> None:
    @app.workflow(name="double")
    def double(x: int) -> int:
        return 2 * x

    @app.workflow
    async def triple(x: int) -> int:
        return 3 * x

    async def in_a_coroutine() -> tuple[int, int]:
        handle = await app.options(workflow_id="t-1").start_async(triple, 1)
        assert handle.workflow_id == "t-1"
        return await handle.result_async(), await app.options(workflow_id="t-2").run_async(
            triple, 2
        )

    import asyncio

    with app:
        handle = app.options(workflow_id="d-1", timeout=30).start(double, 21)
        assert handle.workflow_id == "d-1" and handle.result(timeout=10) == 42
        assert handle.status().deadline is not None
        # Idempotent on the ID: the second start runs nothing and finds the first.
        assert app.options(workflow_id="d-1").run(double, 1) == 42
        assert app.options(workflow_id="d-2").run("double", 4) == 8
        assert asyncio.run(in_a_coroutine()) == (3, 6)
        # The older form still works: options as keywords next to the arguments.
        assert app.run(double, 5, workflow_id="d-3") == 10
        assert app.retrieve("d-3").status().status == "SUCCEEDED"
        assert app.start(double, 6, timeout=30).status().deadline is not None


def test_options_inside_a_workflow_start_a_child(app: perdure.App) -> None:
    @app.workflow
    def child(x: int) -> int:
        return x + 1

    @app.workflow
    def parent() -> int:
        return app.options(workflow_id="the-child").run(child, 1)

    with app:
        assert app.run(parent, workflow_id="p") == 2
    status = app.retrieve("the-child").status()
    assert status.parent_id == "p" and status.status == "SUCCEEDED"


def test_calling_a_workflow_of_an_app_not_launched_fails_fast_and_records_nothing(
    app: perdure.App,
) -> None:
    @app.workflow
    def greet(who: str) -> str:
        return f"hello {who}"

    @app.workflow
    async def greet_async(who: str) -> str:
        return f"hello {who}"

    with pytest.raises(perdure.ConfigurationError, match=r"not launched.*with app:.*app\.start"):
        greet("ada")
    import asyncio

    with pytest.raises(perdure.ConfigurationError, match="perdure worker module:app"):
        asyncio.run(greet_async("ada"))
    assert app.list_workflows() == []
    with app:  # launched, the same call runs it
        assert greet("ada") == "hello ada"


def test_run_without_any_executor_warns_once(make_app, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="perdure")
    client = make_app()
    worker = make_app()
    for registering in (client, worker):

        @registering.workflow(name="greet")
        def greet(who: str) -> str:
            return f"hello {who}"

    import threading

    results: list[str] = []
    waiting = threading.Thread(target=lambda: results.append(client.run("greet", "ada")))
    waiting.start()
    try:
        # No executor anywhere: the run waits, and says why (once).
        for _ in range(100):
            if "no executor of app version" in caplog.text:
                break
            waiting.join(0.05)
        assert "perdure worker module:app" in caplog.text
        worker.launch()
        waiting.join(10)
        assert results == ["hello ada"]
        assert client.run("greet", "bob") == "hello bob"  # a live executor: no warning
    finally:
        worker.launch()
        waiting.join(10)
    assert caplog.text.count("no executor of app version") == 1


def test_the_app_holds_a_client_and_a_worker_instead_of_inheriting_mixins(
    app: perdure.App,
) -> None:
    assert perdure.App.__mro__ == (perdure.App, object)
    assert app.worker is None and app.client.worker is None
    with app:
        assert app.worker is app.executor is app.client.worker is not None
    assert app.worker is None and app.client.worker is None
