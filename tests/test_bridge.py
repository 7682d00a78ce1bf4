"""Awaiting thread-side futures on an event loop with few wake-ups (``_engine/bridge.py``):
the executor's loop and, since issue 16, the client's awaits of starts, reads and
outcomes (``loop_bridge``). A gather of thousands wakes its loop once per batch; a wait
that ends another way (a timeout, an unsubscribed waiter) leaves nothing behind."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

import perdure
from perdure._engine.bridge import FutureBridge, loop_bridge


def _resolve_in_batches(futures: list[Future[int]], batch: int, first: int = 0) -> threading.Thread:
    def run() -> None:
        for start in range(0, len(futures), batch):
            for i, future in enumerate(futures[start : start + batch], first + start):
                future.set_result(i)
            time.sleep(0.002)  # the next batch commits later

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_futures_ended_in_batches_wake_the_loop_once_a_batch() -> None:
    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        wakes = 0
        real = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        futures: list[Future[int]] = [Future() for _ in range(1000)]
        gathered = asyncio.gather(*(loop_bridge().wait(future) for future in futures))
        for start in range(0, 1000, 100):
            # A batch ends while the loop is busy (blocked here), as a commit's does.
            _resolve_in_batches(futures[start : start + 100], 100, start).join()
            await asyncio.sleep(0.001)
        return await gathered, wakes

    results, wakes = asyncio.run(main())
    assert results == list(range(1000))
    assert wakes == 10  # asyncio.wrap_future: 1,000


def test_a_forgotten_future_that_ends_later_leaves_its_awaitable_and_the_bridge_alone() -> None:
    async def main() -> None:
        bridge = loop_bridge()
        future: Future[int] = Future()
        waiter = bridge.wait(future)
        bridge.forget(future)
        waiter.cancel()
        future.set_result(1)
        await asyncio.sleep(0.01)
        assert waiter.cancelled()
        assert not bridge._waiters

    asyncio.run(main())


def test_an_awaitable_given_up_on_is_not_set_again_when_its_future_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        bridge = loop_bridge()
        futures: list[Future[int]] = [Future(), Future()]
        given_up, kept = (bridge.wait(future) for future in futures)
        given_up.set_result(-1)  # a timer gave up on it
        for future in futures:
            future.set_result(7)
        assert await kept == 7
        assert given_up.result() == -1

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert not caplog.records


def test_a_cancelled_future_cancels_its_awaitable() -> None:
    async def main() -> None:
        future: Future[int] = Future()
        waiter = loop_bridge().wait(future)
        threading.Thread(target=future.cancel).start()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 5)

    asyncio.run(main())


def test_futures_that_end_after_their_loop_closed_raise_nothing_in_their_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    futures: list[Future[int]] = [Future() for _ in range(3)]

    async def main() -> None:
        for future in futures:
            loop_bridge().wait(future)

    asyncio.run(main())  # ends (and closes its loop) with the three still awaited
    with caplog.at_level(logging.ERROR):
        thread = _resolve_in_batches(futures, 1)
        thread.join()
    assert all(future.result() == i for i, future in enumerate(futures))
    assert not caplog.records  # concurrent.futures logs a callback's exception


def test_each_loop_of_a_thread_has_its_own_bridge_and_keeps_it_while_it_runs() -> None:
    async def bridges() -> tuple[FutureBridge, FutureBridge]:
        return loop_bridge(), loop_bridge()

    first, again = asyncio.run(bridges())
    second, _ = asyncio.run(bridges())
    assert first is again
    assert second is not first
    assert second.loop is not first.loop


# -- the client's awaits, on a real store ------------------------------------------------------


def test_a_gather_of_results_leaves_no_waiter_in_its_loops_bridge(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="double")
    def double(n: int) -> int:
        return n * 2

    async def main() -> tuple[list[int], list[int], int]:
        handles = await asyncio.gather(*(app.start_async(double, i) for i in range(50)))
        first = await asyncio.gather(*(h.result_async(timeout=30) for h in handles))
        # Again, by handles that know nothing of the runs (found by ID), with every
        # workflow finished: each wait ends at its first look, and its notifier waiter,
        # unsubscribed, is never told.
        found = [await app.retrieve_async(h.workflow_id) for h in handles]
        again = await asyncio.gather(*(h.result_async(timeout=30) for h in found))
        return first, again, len(loop_bridge()._waiters)

    with app:
        first, again, left = asyncio.run(main())
    assert first == again == [i * 2 for i in range(50)]
    assert left == 0


def test_a_waiter_given_up_on_by_its_timer_looks_again_and_gets_the_result(
    make_app: Callable[..., perdure.App],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    go = threading.Event()

    def register(app: perdure.App) -> Any:
        @app.workflow(name="slow")
        def slow(n: int) -> int:
            go.wait(10)
            return n + 1

        return slow

    worker = make_app(lease_seconds=0.3)  # waiters look again every 0.1 s
    register(worker)
    client = make_app(lease_seconds=0.3)  # never launched: the workflow runs in the worker
    slow = register(client)
    looks = 0
    real = perdure.WorkflowHandle._record_async

    async def counted(self: Any, watch: bool = False) -> Any:
        nonlocal looks
        looks += 1
        return await real(self, watch)

    monkeypatch.setattr(perdure.WorkflowHandle, "_record_async", counted)

    async def main() -> tuple[int, int]:
        handle = await client.start_async(slow, 41)
        asyncio.get_running_loop().call_later(0.8, go.set)
        with pytest.raises(perdure.WorkflowTimeoutError):
            await handle.result_async(timeout=0.25)
        result = await handle.result_async(timeout=10)
        return result, len(loop_bridge()._waiters)

    with worker, caplog.at_level(logging.ERROR):
        result, left = asyncio.run(main())
    assert result == 42
    assert looks >= 4  # the waits ended by their timers, each followed by a new look
    assert left == 0
    assert not [r for r in caplog.records if "perdure" in r.name or "asyncio" in r.name]
