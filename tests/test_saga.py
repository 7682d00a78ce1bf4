"""Sagas (``perdure.saga``): compensations in reverse order on an error or a cancel, each a
durable step with its own retries, resumed after a crash, each undo completing once.

In-process tests run on both stores with ``perdure.testing.TestApp`` (retry backoffs in
virtual time); the last test kills a real worker process with SIGKILL while it
compensates.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from ledger import read_ledger
from ledger import wait_for as wait_for_ledger

import perdure
from perdure.testing import TestApp, assert_survives_crashes

TESTS_DIR = Path(__file__).resolve().parent


def _load_saga_app() -> Any:
    """Import tests/saga_app.py by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("perdure_saga_app", TESTS_DIR / "saga_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


saga_app = _load_saga_app()


class OutOfStock(Exception):
    """An order's items are gone: no retry helps."""


def shop(app: TestApp, log: list[str]) -> Any:
    """A checkout whose last step fails: authorize, reserve, then ship raises OutOfStock."""
    releases: dict[str, int] = {}  # per workflow: the first release fails

    @app.step
    def authorize(order: str) -> str:
        log.append("authorize")
        return f"charge-{order}"

    @app.step
    def refund(charge: str) -> None:
        log.append(f"refund {charge}")

    @app.step
    def reserve(order: str) -> str:
        log.append("reserve")
        return f"hold-{order}"

    @app.step(retry=perdure.Retry(max_attempts=3, initial_interval=600.0, jitter=0.0))
    def release(hold: str) -> None:
        log.append(f"release {hold}")
        calls = releases[perdure.workflow_id()] = releases.get(perdure.workflow_id(), 0) + 1
        if calls < 2:
            raise ConnectionError("inventory service down")  # its own retry handles it

    @app.step
    def ship(order: str) -> None:
        log.append("ship")
        raise OutOfStock(f"order {order}: out of stock")

    @app.workflow
    def checkout(order: str) -> str:
        with perdure.saga() as saga:
            charge = authorize(order)
            saga.compensate(refund, charge)
            hold = reserve(order)
            saga.compensate(release, hold)
            ship(order)
        return "shipped"

    return checkout


def test_an_error_runs_the_compensations_in_reverse_with_their_own_retries(
    database_url: str,
) -> None:
    log: list[str] = []
    with TestApp(database_url) as app:
        checkout = shop(app, log)
        handle = app.start(checkout, "7")
        with pytest.raises(OutOfStock, match="out of stock") as caught:
            handle.result()
        record = app.store.get_workflow(handle.workflow_id)
        status = handle.status().error
    assert log == [
        "authorize",
        "reserve",
        "ship",
        "release hold-7",  # failed once: retried by its own policy, a virtual minute later
        "release hold-7",
        "refund charge-7",
    ]
    # The outcome is the original error, noting which compensations ran.
    assert record is not None and record.status == "FAILED"
    error = json.loads(record.error or "{}")
    assert error["type"].endswith(":OutOfStock")
    note = "perdure.saga: compensations run (in order): "
    assert note in error["traceback"] and "shop.release, " in error["traceback"]
    assert note in str(getattr(caught.value, "perdure_traceback", ""))
    # On every Python (3.10 has no add_note, and its tracebacks leave notes out): the note
    # is recorded in the error's own field, comes back on the error raised, and shows in
    # the workflow's status.
    ran = note + "shop.release, shop.refund"
    assert error["notes"] == [ran]
    assert caught.value.__notes__ == [ran]
    assert isinstance(caught.value, OutOfStock)
    assert status is not None and status.endswith(f"out of stock ({ran})")


def test_a_cancel_compensates_and_the_workflow_ends_cancelled(database_url: str) -> None:
    log: list[str] = []
    with TestApp(database_url) as app:

        @app.step
        def book(what: str) -> str:
            log.append(f"book {what}")
            return what

        @app.step
        def unbook(what: str) -> None:
            log.append(f"unbook {what}")

        @app.workflow
        def trip() -> None:
            with perdure.saga() as saga:
                saga.compensate(unbook, book("flight"))
                saga.compensate(unbook, book("hotel"))
                perdure.recv("confirm")  # waits until cancelled

        handle = app.start(trip)
        assert wait_for(lambda: log == ["book flight", "book hotel"] and app.idle())
        app.cancel(handle.workflow_id)
        with pytest.raises(perdure.WorkflowCancelledError):
            handle.result()
    assert log == ["book flight", "book hotel", "unbook hotel", "unbook flight"]


def test_a_passed_deadline_compensates_too(database_url: str) -> None:
    log: list[str] = []
    with TestApp(database_url) as app:

        @app.step
        def hold_room() -> str:
            log.append("hold")
            return "room-1"

        @app.step
        def free_room(room: str) -> None:
            log.append(f"free {room}")

        @app.workflow
        def booking() -> None:
            with perdure.saga() as saga:
                saga.compensate(free_room, hold_room())
                perdure.sleep(timedelta(days=2))  # past the deadline of a day

        handle = app.options(timeout=86400).start(booking)
        with pytest.raises(perdure.DeadlineExceededError):
            handle.result()
    assert log == ["hold", "free room-1"]


def test_a_cancel_while_compensating_does_not_stop_the_compensating(database_url: str) -> None:
    log: list[str] = []
    with TestApp(database_url, time_skipping=False) as app:

        @app.step(retry=perdure.Retry(max_attempts=3, initial_interval=60.0, jitter=0.0))
        def undo_a() -> None:
            log.append("undo a")
            if log.count("undo a") == 1:
                raise ConnectionError("a is down for now")  # retried in a minute

        @app.step
        def undo_b() -> None:
            log.append("undo b")

        @app.workflow
        def fails() -> None:
            with perdure.saga() as saga:
                saga.compensate(undo_b)
                saga.compensate(undo_a)
                raise ValueError("boom")

        handle = app.start(fails)
        assert wait_for(lambda: log == ["undo a"] and app.idle())  # a's retry waits
        app.cancel(handle.workflow_id)  # delivered at a's wait: a is called again
        with pytest.raises(ValueError, match="boom"):
            handle.result()
    assert log == ["undo a", "undo a", "undo b"]


def test_a_failing_compensation_does_not_stop_the_others(database_url: str) -> None:
    log: list[str] = []
    with TestApp(database_url) as app:

        @app.step
        def undo_a() -> None:
            log.append("undo a")

        @app.step
        def undo_b() -> None:
            log.append("undo b")
            raise RuntimeError("b cannot be undone")

        @app.workflow
        def fails() -> None:
            with perdure.saga() as saga:
                saga.compensate(undo_a)
                saga.compensate(undo_b)
                raise ValueError("boom")

        handle = app.start(fails)
        with pytest.raises(ValueError, match="boom"):
            handle.result()
        record = app.store.get_workflow(handle.workflow_id)
    assert log == ["undo b", "undo a"]
    assert record is not None
    traceback = json.loads(record.error or "{}")["traceback"]
    assert "compensations that failed: " in traceback and "b cannot be undone" in traceback


def test_an_async_saga_and_what_compensate_refuses(database_url: str) -> None:
    log: list[str] = []
    with TestApp(database_url) as app:

        @app.step
        async def give(n: int) -> int:
            log.append(f"give {n}")
            return n

        @app.step
        async def take_back(n: int) -> None:
            log.append(f"take back {n}")

        def not_a_step() -> None: ...

        @app.workflow
        async def generous() -> None:
            async with perdure.saga() as saga:
                for n in (1, 2):
                    saga.compensate(take_back, await give(n))
                await perdure.sleep_async(timedelta(hours=1))
                raise LookupError("nobody home")

        @app.workflow
        def careless() -> None:
            with perdure.saga() as saga:
                saga.compensate(not_a_step)

        with pytest.raises(LookupError):
            app.run(generous)
        with pytest.raises(perdure.ConfigurationError, match="takes a step"):
            app.run(careless)
    assert log == ["give 1", "give 2", "take back 2", "take back 1"]


def test_a_saga_survives_a_crash_at_every_point(database_url: str) -> None:
    # Crash injection over the saga: after each step, each compensation and each retry
    # wait; every run must fail with OutOfStock, each step running once per recorded
    # attempt (a compensation that completed before the crash never runs again).
    log: list[str] = []
    with TestApp(database_url) as app:
        checkout = shop(app, log)
        points = assert_survives_crashes(app, checkout, "9")
    names = [str(point.name).rsplit(".", 1)[-1] for point in points if point.kind == "step"]
    assert names == ["authorize", "reserve", "ship", "release", "release", "refund"]


def wait_for(condition: Any, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


# -- a real crash while compensating -------------------------------------------------------


@pytest.mark.slow
def test_sigkill_while_compensating_resumes_and_each_undo_completes_once(tmp_path: Path) -> None:
    """A worker is killed with SIGKILL while it runs the last compensation (``refund``,
    after ``release`` completed); a new worker resumes the compensating: ``release`` does
    not run again, ``refund`` completes once, and the workflow fails with the original
    error, noting both compensations."""
    ledger, go = tmp_path / "ledger.jsonl", tmp_path / "go"
    url = f"sqlite:///{tmp_path / 'perdure.db'}"
    env = dict(os.environ, PERDURE_DATABASE_URL=url, PERDURE_LEDGER=str(ledger))
    env["PERDURE_GO"] = str(go)
    # Absolute: the worker runs in tmp_path (and must import this checkout's perdure).
    paths = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *paths])
    client = saga_app.build_app(url)
    workers: list[subprocess.Popen[bytes]] = []

    def worker() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "perdure", "worker", "saga_app:app"]
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
        workers.append(proc)
        return proc

    def started(step: str) -> list[dict[str, Any]]:
        return [e for e in read_ledger(ledger) if e["step"] == step and e["phase"] == "start"]

    try:
        handle = client.start("checkout", "42")
        first = worker()
        wait_for_ledger(lambda: bool(started("refund")), 60, "the refund to start")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        go.touch()
        second = worker()
        with pytest.raises(perdure.WorkflowFailedError) as caught:
            handle.result(timeout=60)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        client.shutdown()
    entries = read_ledger(ledger)

    def count(step: str, phase: str, pid: int | None = None) -> int:
        return sum(
            1
            for e in entries
            if e["step"] == step and e["phase"] == phase and pid in (None, e["pid"])
        )

    # Before the kill: every step once, release completed, refund in flight.
    for step in ("authorize", "reserve", "ship", "release"):
        assert count(step, "start", first.pid) == 1, step
    assert count("release", "end", first.pid) == 1
    assert count("refund", "start", first.pid) == 1 and count("refund", "end", first.pid) == 0
    # After it: only the compensation in flight ran again, to its end, once.
    assert [e["step"] for e in entries if e["pid"] == second.pid] == ["refund", "refund"]
    assert count("refund", "end") == 1 and count("release", "start") == 1
    # The outcome is the original error (OutOfStock is not imported here: its type name),
    # noting the compensations in the order they ran.
    assert caught.value.type_name.endswith(":OutOfStock")
    assert "compensations run (in order): release, refund" in caught.value.traceback
