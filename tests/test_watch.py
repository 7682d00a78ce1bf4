"""Waiting for results costs the store little: waiters of workflows that run elsewhere
share one look per interval (``_watch.Watcher``), and a waiter of a workflow that runs
in its own process reads nothing (the executor hands it the outcome)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import perdure


def _count(monkeypatch: pytest.MonkeyPatch, app: perdure.App, *names: str) -> Counter[str]:
    """Count the calls of these operations on the app's (real) store."""
    calls: Counter[str] = Counter()
    store = app.store
    for name in names:
        real = getattr(store, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    return calls


def _watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "perdure-watcher"]


def test_waiters_of_workflows_running_elsewhere_share_one_look_per_interval(
    make_app: Callable[..., perdure.App], monkeypatch: pytest.MonkeyPatch
) -> None:
    go = threading.Event()

    def register(app: perdure.App) -> Any:
        @app.workflow(name="slow")
        def slow(n: int) -> int:
            go.wait(10)
            return n * 2

        return slow

    client = make_app()  # never launched: its workflows run in the worker below
    slow = register(client)
    handles = [client.start(slow, i) for i in range(40)]
    calls = _count(monkeypatch, client, "get_workflow", "unfinished_among")
    results: dict[int, int] = {}
    waiters = [
        threading.Thread(target=lambda i=i, h=h: results.__setitem__(i, h.result(timeout=30)))
        for i, h in enumerate(handles)
    ]
    began = time.monotonic()
    for thread in waiters:
        thread.start()
    worker = make_app()
    register(worker)
    with worker:
        time.sleep(1.0)  # every waiter waits through many poll intervals (0.05 s)
        go.set()
        for thread in waiters:
            thread.join(30)
    elapsed = time.monotonic() - began
    assert results == {i: i * 2 for i in range(40)}
    # Each waiter read its own record when it began and once when poked: not once per
    # poll interval (that was ~20 reads each here).
    assert calls["get_workflow"] <= 3 * len(handles), calls
    # The looks: at most two per interval (2 s with pushed events, 0.05 s without).
    interval = client.client.wait_interval
    assert calls["unfinished_among"] <= 2 * elapsed / interval + 3, (calls, elapsed)
    # The watcher's thread runs only while somebody waits.
    deadline = time.monotonic() + 10
    while _watcher_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _watcher_threads()


def test_a_waiter_of_a_workflow_running_here_reads_nothing(
    app: perdure.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = threading.Event()

    @app.workflow
    def held(n: int) -> int:
        go.wait(10)
        return n + 1

    @app.workflow
    async def held_async(n: int) -> int:
        await asyncio.to_thread(go.wait, 10)
        return n + 2

    with app:
        sync_handle = app.start(held, 1)
        async_handle = app.start(held_async, 1)
        calls = _count(monkeypatch, app, "get_workflow", "unfinished_among")
        threading.Timer(0.3, go.set).start()
        assert sync_handle.result(timeout=10) == 2

        async def wait() -> int:
            return await async_handle.result_async(timeout=10)

        assert asyncio.run(wait()) == 3
    # The first finished while the other ran: both were handed their outcome by the
    # executor, or read it once if it had just finished.
    assert calls["get_workflow"] <= 1, calls
    assert calls["unfinished_among"] == 0, calls
