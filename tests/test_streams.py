"""Streams: ``perdure.write_stream``/``close_stream`` inside workflows and steps, and
``app.read_stream`` outside (replayed, then followed live), on both stores."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import perdure


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def suspended(app: perdure.App, workflow_id: str) -> bool:
    record = app.store.get_workflow(workflow_id)
    return record is not None and record.owner is None and record.wake_at is not None


def test_a_stream_is_replayed_then_followed_live_and_each_value_comes_once(
    make_app: Callable[..., perdure.App],
) -> None:
    # suspend_after=0: every recv suspends the workflow, which then replays from the top:
    # the writes recorded before it are not made again.
    app = make_app(suspend_after=0.0)

    @app.workflow(name="chat")
    def chat() -> str:
        perdure.write_stream("tokens", "Hel")
        perdure.write_stream("tokens", {"text": "lo"})
        while (more := perdure.recv("more")) is not None:
            perdure.write_stream("tokens", more)
        perdure.close_stream("tokens")
        perdure.recv("finish")  # still running after the close
        return "done"

    with app:
        handle = app.start(chat, workflow_id="chat-1")
        live: list[Any] = []
        live_async: list[Any] = []

        def read() -> None:
            live.extend(app.read_stream("chat-1", "tokens"))

        async def read_async() -> None:
            async for value in app.read_stream("chat-1", "tokens"):
                live_async.append(value)

        readers = [
            threading.Thread(target=read),
            threading.Thread(target=lambda: asyncio.run(read_async())),
        ]
        for reader in readers:
            reader.start()
        for word in ("wor", "ld"):
            wait_for(lambda: suspended(app, "chat-1"))
            app.send("chat-1", word, topic="more")
        wait_for(lambda: suspended(app, "chat-1"))
        app.send("chat-1", None, topic="more")
        # The readers stop at the close, though the workflow still runs.
        for reader in readers:
            reader.join(timeout=20)
            assert not reader.is_alive()
        expected = ["Hel", {"text": "lo"}, "wor", "ld"]
        assert live == expected and live_async == expected
        assert handle.status().status == "RUNNING"
        # Replayed from the start, or from an offset (an SSE client's Last-Event-ID).
        assert list(app.read_stream("chat-1", "tokens")) == expected
        assert list(app.read_stream("chat-1", "tokens", start=2)) == ["wor", "ld"]
        entries = list(app.read_stream("chat-1", "tokens").entries())
        assert [entry.offset for entry in entries] == [0, 1, 2, 3]
        assert all("#" not in entry.writer for entry in entries)  # written by the workflow
        app.send("chat-1", None, topic="finish")
        assert handle.result(timeout=15) == "done"
    # Each write is recorded at its position, once, whatever the replays.
    names = [s.name for s in handle.status().steps]
    assert names.count("perdure.write_stream") == 4 and names.count("perdure.close_stream") == 1
    assert len(app.store.read_stream("chat-1", "tokens")) == 5  # four values and the close


def test_a_reader_stops_when_the_workflow_ends_and_a_closed_stream_refuses_more(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="progress")
    def progress(n: int) -> int:
        for i in range(n):
            perdure.write_stream("pct", i * 10)
        return n  # never closed: readers stop when it ends

    @app.workflow(name="late_write")
    def late_write() -> str:
        perdure.close_stream("s")
        try:
            perdure.write_stream("s", "late")
        except perdure.ConfigurationError as exc:
            return str(exc)
        return "written"

    with app:
        handle = app.start(progress, 3)
        assert list(app.read_stream(handle.workflow_id, "pct")) == [0, 10, 20]
        assert list(app.read_stream(handle.workflow_id, "nothing")) == []
        message = app.run(late_write)
        assert "stream 's' of workflow" in message and "is closed" in message
        with pytest.raises(perdure.WorkflowNotFoundError):
            list(app.read_stream("no-such-workflow", "pct"))
        with pytest.raises(ValueError, match="start must be an offset"):
            app.read_stream(handle.workflow_id, "pct", start=-1)
        with pytest.raises(perdure.ConfigurationError, match="outside a workflow"):
            perdure.write_stream("pct", 1)
        with pytest.raises(perdure.InvalidValueError):
            app.read_stream(handle.workflow_id, "bad\x00key")


def test_writes_from_a_step_are_live_and_at_least_once_per_attempt(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    attempts: list[int] = []
    seen_while_running: list[list[Any]] = []

    @app.step(retry=perdure.Retry(max_attempts=2, initial_interval=0.01, jitter=0.0))
    def generate(workflow_id: str) -> str:
        attempts.append(1)
        perdure.write_stream("tokens", "a")
        # A reader sees it before the step returns.
        seen_while_running.append(list(app.store.read_stream(workflow_id, "tokens")))
        if len(attempts) == 1:
            raise ConnectionError("the model's connection dropped")
        perdure.write_stream("tokens", "b")
        return "ab"

    @app.workflow(name="answer")
    def answer() -> str:
        text = generate(perdure.workflow_id())
        perdure.close_stream("tokens")
        return text

    with app:
        handle = app.start(answer)
        assert handle.result(timeout=15) == "ab"
    entries = list(app.read_stream(handle.workflow_id, "tokens").entries())
    # The failed attempt's value stays; each entry names the attempt that wrote it.
    assert [(e.value, e.writer) for e in entries] == [
        ('"a"', "0#1@1"),
        ('"a"', "0#2@1"),
        ('"b"', "0#2@1"),
    ]
    assert all(seen for seen in seen_while_running)


def test_async_workflows_and_async_steps_write_streams(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.step
    async def tokens(n: int) -> int:
        for i in range(n):
            await perdure.write_stream_async("out", f"t{i}")
        perdure.write_stream("out", "sync-in-async-step")  # the loop does not wait for it
        return n

    @app.workflow(name="agent")
    async def agent() -> int:
        await perdure.write_stream_async("out", "start")
        n = await tokens(2)
        perdure.write_stream("out", "deferred")  # an async workflow's sync form
        await perdure.close_stream_async("out")
        return n

    async def main() -> list[Any]:
        handle = await app.start_async(agent)
        values = [value async for value in app.read_stream(handle.workflow_id, "out")]
        assert await handle.result_async(timeout=15) == 2
        return values

    with app:
        values = asyncio.run(main())
    assert values == ["start", "t0", "t1", "sync-in-async-step", "deferred"]


def test_on_postgresql_a_reader_in_another_process_is_woken_by_notify(postgres_url: str) -> None:
    # Two apps, as two processes would be: the reader's only news of a write is
    # PostgreSQL's NOTIFY (its own polls are a minute apart).
    writer = perdure.App(postgres_url, poll_interval=0.05, suspend_after=0.0)
    reader = perdure.App(postgres_url, poll_interval=60.0)

    @writer.workflow(name="ticker")
    def ticker() -> None:
        while (tick := perdure.recv("tick")) is not None:
            perdure.write_stream("ticks", tick)

    try:
        with writer:
            handle = writer.start(ticker, workflow_id="ticker-1")
            got: list[Any] = []
            follower = threading.Thread(
                target=lambda: got.extend(reader.read_stream("ticker-1", "ticks"))
            )
            follower.start()
            for n in range(3):
                writer.send("ticker-1", n, topic="tick")
                wait_for(lambda n=n: len(got) == n + 1, timeout=30)
            writer.send("ticker-1", None, topic="tick")
            handle.result(timeout=15)
            follower.join(timeout=30)  # the end of the workflow is pushed too
            assert not follower.is_alive() and got == [0, 1, 2]
    finally:
        reader.shutdown()
        writer.shutdown()


def test_a_stream_write_a_step_did_not_wait_for_fails_its_attempt_when_not_stored(
    make_app: Callable[..., perdure.App],
) -> None:
    # On an event loop the sync write_stream does not wait for its commit. One that is
    # not stored (here: the stream was closed) used to be only logged, and the step
    # succeeded without its value: the attempt now waits for such writes before it
    # counts, so the failure is the attempt's (and a retry writes again).
    app = make_app()
    once = perdure.Retry(max_attempts=1)

    @app.step(retry=once)
    async def late_async() -> str:
        perdure.write_stream("s", "late")  # the sync form: queued, not awaited
        return "returned"

    @app.step(retry=once)
    def late_sync() -> str:  # called by an async workflow: it runs on the loop's thread
        perdure.write_stream("s", "late")
        return "returned"

    @app.workflow(name="closed_then_written")
    async def closed_then_written() -> list[str]:
        await perdure.close_stream_async("s")
        seen = []
        for attempt in (late_async, late_sync):
            try:
                result = attempt()
                seen.append(await result if asyncio.iscoroutine(result) else result)
            except perdure.ConfigurationError as exc:
                seen.append(str(exc))
        return seen

    with app:
        handle = app.start(closed_then_written)
        seen = handle.result(timeout=15)
        assert len(seen) == 2
        assert all("stream 's' of workflow" in text and "is closed" in text for text in seen)
        assert [entry.value for entry in app.store.read_stream(handle.workflow_id, "s")] == [None]
        steps = [step for step in handle.status().steps if step.name != "perdure.close_stream"]
        assert [step.status for step in steps] == ["FAILED", "FAILED"]
