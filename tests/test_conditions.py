"""Retrying on a condition: probe-gated retries, long backoffs that suspend, and circuit
breakers shared by every workflow and executor, on both stores.

Network probes are tested against real listeners on 127.0.0.1. Breaker tests move an
injected clock past cool-downs instead of sleeping through them, so that each phase
(open, probe, close) happens exactly when the test says.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import OffsetClock

import perdure
from perdure import probes
from perdure._cli import cli
from perdure._probe import run_probe
from perdure.storage import Lease, NewWorkflow, Store, open_store
from perdure.testing import TestApp


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def closed_port() -> socket.socket:
    """A socket bound to a port of its own and not listening: a connection to that port is
    refused, and no other process (the suite runs several) can take the port meanwhile,
    as it could between ``free_port()`` and its use."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


class Service:
    """A tiny HTTP service on 127.0.0.1 that can be started and stopped on its port:
    ``/health`` answers ``health_status``, ``/charge`` counts its calls and answers 200,
    ``/redirect`` 302 and ``/down`` 503."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.health_status = 200
        self.charges = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                status = {"/redirect": 302, "/down": 503}.get(self.path, 200)
                if self.path == "/health":
                    status = service.health_status
                if self.path == "/charge":
                    service.charges += 1
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None


@pytest.fixture
def service() -> Iterator[Service]:
    created = Service()
    yield created
    created.stop()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


# -- probes ---------------------------------------------------------------------------------


def test_probes_tell_up_from_down(service: Service) -> None:
    service.start()
    assert probes.http(service.url("/health"))()
    assert probes.http(service.url("/redirect"))()  # 3xx: the server answers
    assert run_probe(probes.http(service.url("/down"))) == (
        False,
        "HTTPError: HTTP Error 503: Service Unavailable",
    )
    assert probes.tcp("127.0.0.1", service.port)()
    with closed_port() as holder:
        closed = holder.getsockname()[1]
        passed, why = run_probe(probes.tcp("127.0.0.1", closed, timeout=1))
        assert not passed and why.startswith("ConnectionRefusedError")
        assert not run_probe(probes.http(f"http://127.0.0.1:{closed}/health", timeout=1))[0]
    assert str(probes.tcp("db", 5432)) == "tcp db:5432"
    with pytest.raises(ValueError, match="http:// or https://"):
        probes.http("db:5432")
    # Any callable: truthy is up; falsy or raising is down; async ones are awaited.

    def raises() -> bool:
        raise OSError("no route")

    async def up_async() -> bool:
        return True

    assert run_probe(lambda: 1) == (True, "")
    assert run_probe(lambda: None) == (False, "returned None")
    assert run_probe(raises) == (False, "OSError: no route")
    assert run_probe(up_async) == (True, "")


def test_probe_backoff_doubles_up_to_its_cap() -> None:
    policy = perdure.Retry(wait_for=lambda: True, probe_interval=1, probe_max_interval=5, jitter=0)
    assert [policy.probe_delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert policy.probe_delay(10_000) == 5  # a service down for days does not overflow
    with pytest.raises(ValueError):
        perdure.Retry(wait_for="http://x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        perdure.Retry(probe_interval=10, probe_max_interval=1)
    with pytest.raises(ValueError):
        perdure.CircuitBreaker("b", failure_threshold=0)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_probe_gated_retry_counts_no_attempt_while_down_and_runs_when_it_passes(
    make_app, kind: str
) -> None:
    """The service is down (nothing listens on its port): the first attempt fails, then
    the probe fails again and again without any attempt; once the service listens, the
    probe passes and the second attempt runs and succeeds."""
    service = Service()
    app = make_app()
    policy = perdure.Retry(
        max_attempts=2,
        initial_interval=0.05,
        jitter=0,
        wait_for=probes.http(service.url("/health"), timeout=1),
        probe_interval=0.05,
        probe_max_interval=0.1,
    )
    if kind == "sync":

        @app.step(name="charge", retry=policy)
        def charge() -> str:
            return get(service.url("/charge"))

        @app.workflow(name="pay")
        def pay() -> str:
            return charge()

    else:

        @app.step(name="charge", retry=policy)
        async def charge_async() -> str:
            return await asyncio.to_thread(get, service.url("/charge"))

        @app.workflow(name="pay")
        async def pay_async() -> str:
            return await charge_async()

    try:
        with app:
            handle = app.start("pay", workflow_id="pay-1")  # type: ignore[arg-type]

            def probed_three_times() -> bool:
                steps = handle.status().steps
                return bool(steps) and (steps[0].waiting_for or "").endswith("(failed 3 time(s))")

            wait_for(probed_three_times, what="three failed probes")
            (step,) = handle.status().steps
            assert (step.status, step.attempts) == ("RETRYING", 1)
            assert step.error is not None and "Connection refused" in step.error
            assert step.waiting_for is not None
            assert step.waiting_for.startswith(f"probe http GET {service.url('/health')} to pass")
            assert service.charges == 0
            service.start()
            assert handle.result(timeout=20) == "ok"
    finally:
        service.stop()
    (step,) = handle.status().steps
    assert (step.status, step.attempts, step.waiting_for) == ("SUCCEEDED", 2, None)
    assert service.charges == 1


def test_a_failing_probe_suspends_the_workflow_and_holds_no_thread(make_app) -> None:
    """A probe wait longer than suspend_after suspends the workflow: no thread, no owner;
    status says which probe it waits for. A TCP listener opening makes it go on."""
    listener = closed_port()  # listens once the test says so
    port = listener.getsockname()[1]
    app = make_app(suspend_after=0.2)
    calls: list[int] = []

    @app.step(
        name="query_db",
        retry=perdure.Retry(
            max_attempts=3,
            initial_interval=0.05,
            jitter=0,
            wait_for=probes.tcp("127.0.0.1", port, timeout=1),
            probe_interval=0.5,
            probe_max_interval=0.5,
        ),
    )
    def query_db() -> int:
        calls.append(1)
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return len(calls)

    @app.workflow(name="report")
    def report() -> int:
        return query_db()

    with listener, app:  # the socket is closed however the test ends
        handle = app.start("report", workflow_id="report-1")  # type: ignore[arg-type]
        wait_for(lambda: handle.status().suspended, what="the workflow to suspend")
        status = handle.status()
        assert status.owner is None and status.status == "RUNNING"
        assert status.waiting_for is not None
        assert status.waiting_for.startswith(f"probe tcp 127.0.0.1:{port} to pass (next probe at ")
        assert app.executor is not None and app.executor.running == 0
        (step,) = status.steps
        assert (step.status, step.attempts) == ("RETRYING", 1)
        assert calls == [1]
        listener.listen()
        assert handle.result(timeout=20) == 2
    assert len(calls) == 2


def test_long_retry_backoffs_suspend_and_resume_on_time(database_url: str) -> None:
    # On a virtual clock (perdure.testing): the hour of backoff passes in no real time, and
    # the test moves the clock itself to see the workflow suspended first.
    app = TestApp(database_url, time_skipping=False)
    attempts: list[float] = []

    @app.step(
        name="flaky",
        retry=perdure.Retry(max_attempts=2, initial_interval=3600.0, max_interval=3600, jitter=0),
    )
    def flaky() -> str:
        attempts.append(app.clock.time())
        if len(attempts) == 1:
            raise ConnectionError("gateway timeout")
        return "ok"

    @app.workflow(name="uses_flaky")
    def uses_flaky() -> str:
        return flaky()

    with app:
        handle = app.start("uses_flaky", workflow_id="flaky-1")  # type: ignore[arg-type]
        wait_for(lambda: handle.status().suspended, what="the backoff to suspend the workflow")
        status = handle.status()
        assert status.waiting_for == (
            f"the next attempt of step 'flaky' at {status.steps[0].next_attempt_at.isoformat()}"  # type: ignore[union-attr]
        )
        next_attempt_at = status.steps[0].next_attempt_at
        assert next_attempt_at is not None
        assert next_attempt_at.timestamp() - attempts[0] == pytest.approx(3600, abs=1)
        wait_for(app.idle, what="nothing to run until the next attempt")
        assert app.executor is not None and app.executor.running == 0
        # Nothing can run: skipping moves the clock to the next attempt's time, exactly.
        assert app.skip() == pytest.approx(next_attempt_at.timestamp(), abs=1e-3)
        assert handle.result(timeout=20) == "ok"
    # Not a moment early: the second attempt ran at (or after) the recorded time.
    assert attempts[1] >= next_attempt_at.timestamp() - 1e-3
    status = handle.status()
    assert status.recoveries == 0 and [(s.status, s.attempts) for s in status.steps] == [
        ("SUCCEEDED", 2)
    ]


# -- circuit breakers -------------------------------------------------------------------------


class Payments:
    """A payment service that is down until ``up`` is set; every call records the state
    of the breaker at that moment, as the store has it."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self.up = False
        self.calls: list[str] = []
        self._store = store
        self._lock = threading.Lock()

    def called(self, times: int) -> Callable[[], bool]:
        return lambda: len(self.calls) == times

    def charge(self, order: int) -> str:
        record = self._store().get_breaker("payments")
        with self._lock:
            self.calls.append(record.state if record else "CLOSED")
        if not self.up:
            raise ConnectionError("payments: connection refused")
        return f"charged-{order}"


def register(app: perdure.App, payments: Payments, breaker: perdure.CircuitBreaker) -> None:
    @app.step(
        name="charge",
        breaker=breaker,
        retry=perdure.Retry(max_attempts=10, initial_interval=600, max_interval=600, jitter=0),
    )
    def charge(order: int) -> str:
        return payments.charge(order)

    @app.workflow(name="checkout")
    def checkout(order: int) -> str:
        return charge(order)


def all_suspended(app: perdure.App, clock: OffsetClock, ids: list[str]) -> bool:
    """Whether every workflow is suspended until later (none is due or running)."""
    for workflow_id in ids:
        record = app.store.get_workflow(workflow_id)
        assert record is not None
        if record.owner is not None or record.wake_at is None or record.wake_at <= clock.time():
            return False
    return True


def advance(clock: OffsetClock, seconds: float, *apps: perdure.App) -> None:
    clock.offset += seconds
    for app in apps:
        assert app.executor is not None
        app.executor.wake()


def test_breaker_opens_parks_workflows_and_one_probe_attempt_closes_it(
    make_app, caplog: pytest.LogCaptureFixture
) -> None:
    """Three failures open the breaker; sixty workflows started then park without calling
    the service; after the cool-down exactly one probe attempt runs (it fails: open
    again); after the next cool-down one probe attempt succeeds, the breaker closes and
    every parked workflow resumes and completes."""
    caplog.set_level(logging.INFO, logger="perdure")
    clock = OffsetClock()
    app = make_app(clock=clock, suspend_after=0.2)
    payments = Payments(lambda: app.store)
    breaker = perdure.CircuitBreaker(
        "payments", failure_threshold=3, window=3600, cooldown=600, probe_timeout=600
    )
    register(app, payments, breaker)
    with app:
        # Three failures, one after the other: the third opens the breaker.
        first = [f"first-{n}" for n in range(3)]
        for n, workflow_id in enumerate(first):
            app.start("checkout", n, workflow_id=workflow_id)  # type: ignore[arg-type]
            wait_for(payments.called(n + 1), what="the attempt")
        wait_for(lambda: app.breaker("payments").state == "OPEN", what="the breaker to open")
        opened = app.breaker(breaker)
        assert (opened.failures, opened.last_error) == (
            3,
            "ConnectionError: payments: connection refused",
        )
        assert opened.retry_at is not None and opened.opened_at is not None
        assert (opened.retry_at - opened.opened_at).total_seconds() == pytest.approx(600)
        assert "circuit breaker 'payments' opened after 3 failure(s)" in caplog.text

        # Sixty more park without calling.
        parked = [f"parked-{n}" for n in range(60)]
        for n, workflow_id in enumerate(parked):
            app.start("checkout", 100 + n, workflow_id=workflow_id)  # type: ignore[arg-type]
        everyone = first + parked
        wait_for(lambda: all_suspended(app, clock, everyone), what="every workflow to park")
        # The store records a suspension before the executor forgets its run: wait for both.
        executor = app.executor
        assert executor is not None
        wait_for(lambda: executor.running == 0, what="the executor to hold no run")
        assert payments.calls == ["CLOSED"] * 3
        assert app.breaker("payments").parked == 60
        status = app.retrieve("parked-7").status()
        assert status.steps == ()  # parking counts no attempt and records nothing
        assert status.waiting_for == (
            f"circuit breaker 'payments' to close (next look at {opened.retry_at.isoformat()} "
            "at the latest)"
        )

        # The cool-down ends: one probe attempt, which fails: open again.
        advance(clock, 601, app)
        wait_for(
            lambda: app.breaker("payments").opened_at != opened.opened_at, what="the failed probe"
        )
        wait_for(lambda: all_suspended(app, clock, everyone), what="every workflow to park again")
        assert payments.calls == ["CLOSED"] * 3 + ["HALF_OPEN"]
        reopened = app.breaker("payments")
        assert reopened.state == "OPEN" and reopened.probe_holder is None
        assert "stays open" in caplog.text

        # The service is back; after the next cool-down one probe attempt closes it, and
        # every parked workflow resumes at once.
        payments.up = True
        advance(clock, 601, app)
        results = [app.retrieve(wid).result(timeout=60) for wid in everyone]
    assert results == [f"charged-{n}" for n in range(3)] + [f"charged-{100 + n}" for n in range(60)]
    # One failed and one successful probe attempt; no call while the breaker was open.
    assert payments.calls.count("HALF_OPEN") == 2 and "OPEN" not in payments.calls
    assert len(payments.calls) == 3 + 1 + 63
    closed = app.breaker("payments")
    assert (closed.state, closed.failures, closed.parked) == ("CLOSED", 0, 0)
    assert "circuit breaker 'payments' closed" in caplog.text


def test_two_executors_share_one_breaker_and_run_one_probe_attempt(make_app) -> None:
    """Two apps (two executors, as two processes would) on one database: a breaker opened
    by failures on one parks the workflows of both, one probe attempt runs between them,
    and its success resumes the workflows of both."""
    clock = OffsetClock()
    first, second = (
        make_app(clock=clock, suspend_after=0.2),
        make_app(clock=clock, suspend_after=0.2),
    )
    payments = Payments(lambda: first.store)
    breaker = perdure.CircuitBreaker("payments", failure_threshold=2, window=3600, cooldown=600)
    for app in (first, second):
        register(app, payments, breaker)
    with first, second:
        for n in range(2):
            first.start("checkout", n, workflow_id=f"opener-{n}")  # type: ignore[arg-type]
            wait_for(payments.called(n + 1), what="the attempt")
        wait_for(lambda: second.breaker("payments").state == "OPEN", what="the breaker to open")
        ids = ["opener-0", "opener-1"]
        for n in range(25):
            for app, tag in ((first, "a"), (second, "b")):
                app.start("checkout", 10 + n, workflow_id=f"{tag}-{n}")  # type: ignore[arg-type]
                ids.append(f"{tag}-{n}")
        wait_for(lambda: all_suspended(first, clock, ids), what="every workflow to park")
        assert len(payments.calls) == 2
        assert second.breaker("payments").parked == 50

        # Both executors wake their due workflows at once; only one probe attempt runs.
        advance(clock, 601, first, second)
        wait_for(lambda: first.breaker("payments").state == "OPEN" and len(payments.calls) > 2)
        wait_for(lambda: all_suspended(first, clock, ids), what="every workflow to park again")
        assert payments.calls == ["CLOSED", "CLOSED", "HALF_OPEN"]

        payments.up = True
        advance(clock, 601, first, second)
        for workflow_id in ids:
            assert first.retrieve(workflow_id).result(timeout=60).startswith("charged-")
    assert payments.calls.count("HALF_OPEN") == 2 and "OPEN" not in payments.calls
    assert len(payments.calls) == 2 + 1 + len(ids)


def test_breakers_are_listed_by_app_and_cli(make_app, database_url: str) -> None:
    app = make_app()
    idle = perdure.CircuitBreaker("inventory")

    @app.step(breaker=idle)
    def reserve() -> None:
        pass

    now = time.time()
    assert app.store.count_breaker_failure(
        "payments", now, 1, 60, now + 30, '{"type": "x:E", "message": "boom"}'
    )
    assert [(b.name, b.state) for b in app.breakers()] == [
        ("inventory", "CLOSED"),
        ("payments", "OPEN"),
    ]
    assert app.breaker("nothing").state == "CLOSED"
    result = CliRunner().invoke(cli, ["breakers", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    # Without --app the command knows only the breakers in the store.
    (line,) = result.output.splitlines()
    assert line.startswith("payments  OPEN  probe attempt from ")
    assert line.endswith("last error: x.E: boom")
    as_json = CliRunner().invoke(cli, ["breakers", "--database-url", database_url, "--json"])
    assert as_json.exit_code == 0 and '"state": "OPEN"' in as_json.output


# -- the store's breaker operations (both stores) ----------------------------------------------


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def suspend_on(store: Store, workflow_id: str, topic: str | None, wake_at: float = 900.0) -> None:
    new = NewWorkflow(workflow_id, "checkout", '{"args":[],"kwargs":{}}', "json", "1", 100.0)
    store.create_workflow(new, "exec-1", 500.0).result()
    assert store.suspend_workflow(workflow_id, Lease("exec-1", 1), wake_at, topic, 100.0).result()


def test_breaker_counts_failures_in_a_window_and_opens_once(store: Store) -> None:
    assert store.get_breaker("b") is None
    assert not store.count_breaker_failure("b", 100.0, 3, 10.0, 130.0, "e1")
    assert not store.count_breaker_failure("b", 105.0, 3, 10.0, 135.0, "e2")
    # The window (10 s from the first failure) passed: counting starts again.
    assert not store.count_breaker_failure("b", 111.0, 3, 10.0, 141.0, "e3")
    record = store.get_breaker("b")
    assert record is not None and (record.state, record.failures, record.window_start) == (
        "CLOSED",
        1,
        111.0,
    )
    assert not store.count_breaker_failure("b", 112.0, 3, 10.0, 142.0, "e4")
    assert store.count_breaker_failure("b", 113.0, 3, 10.0, 143.0, "e5")
    record = store.get_breaker("b")
    assert record is not None
    assert (record.state, record.opened_at, record.retry_at, record.last_error) == (
        "OPEN",
        113.0,
        143.0,
        "e5",
    )
    # An open breaker counts nothing more.
    assert not store.count_breaker_failure("b", 114.0, 3, 10.0, 144.0, "e6")


def test_concurrent_failures_are_each_counted_and_open_the_breaker_once(store: Store) -> None:
    barrier = threading.Barrier(8)
    opened: list[bool] = []

    def fail() -> None:
        barrier.wait()
        for _ in range(5):
            opened.append(store.count_breaker_failure("b", 100.0, 40, 60.0, 130.0, "e"))

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert opened.count(True) == 1
    record = store.get_breaker("b")
    assert record is not None and (record.state, record.failures) == ("OPEN", 40)


def test_one_probe_at_a_time_and_closing_wakes_every_parked_workflow(store: Store) -> None:
    assert store.count_breaker_failure("b", 100.0, 1, 60.0, 130.0, "e")
    # Still cooling down: nobody may probe.
    assert not store.claim_breaker_probe("b", "w1#0", 120.0, 180.0)
    assert store.claim_breaker_probe("b", "w1#0", 130.0, 190.0)
    assert not store.claim_breaker_probe("b", "w2#0", 131.0, 191.0)
    assert store.claim_breaker_probe("b", "w1#0", 132.0, 192.0)  # its own again (a replay)
    # The probe's holder died: once its probe expires, another may probe.
    assert store.claim_breaker_probe("b", "w2#0", 192.0, 252.0)
    assert not store.reopen_breaker("b", "w1#0", 193.0, 223.0, "late")  # not its probe
    assert store.reopen_breaker("b", "w2#0", 193.0, 223.0, "still down")
    record = store.get_breaker("b")
    assert record is not None and (record.state, record.retry_at, record.probe_holder) == (
        "OPEN",
        223.0,
        None,
    )
    suspend_on(store, "p1", "perdure.breaker:b")
    suspend_on(store, "p2", "perdure.breaker:b")
    suspend_on(store, "other", "perdure.breaker:c")
    suspend_on(store, "sleeper", None)
    assert [(r.name, r.parked) for r in store.list_breakers()] == [("b", 2)]
    assert store.claim_breaker_probe("b", "w3#0", 223.0, 283.0)
    assert store.close_breaker("b", 230.0) == 2
    assert store.close_breaker("b", 231.0) is None  # closed already
    wakes = {wid: store.get_workflow(wid).wake_at for wid in ("p1", "p2", "other", "sleeper")}  # type: ignore[union-attr]
    assert wakes == {"p1": 230.0, "p2": 230.0, "other": 900.0, "sleeper": 900.0}
    record = store.get_breaker("b")
    assert record is not None and (record.state, record.failures, record.probe_holder) == (
        "CLOSED",
        0,
        None,
    )
    claimed = store.claim_workflows("me", ["checkout"], "1", 231.0, 300.0)
    assert sorted(r.id for r in claimed) == ["p1", "p2"]


def test_parking_on_a_breaker_that_closed_meanwhile_wakes_at_once(store: Store) -> None:
    """A workflow that saw the breaker open, but parks only after it closed, is not left
    waiting for its wake time: the suspension sees the breaker closed."""
    assert store.count_breaker_failure("b", 100.0, 1, 60.0, 130.0, "e")
    assert store.claim_breaker_probe("b", "w1#0", 130.0, 190.0)
    assert store.close_breaker("b", 131.0) == 0
    suspend_on(store, "late", "perdure.breaker:b", wake_at=190.0)
    record = store.get_workflow("late")
    assert record is not None and record.wake_at == 100.0  # the suspension's "now"
    # Parked on a breaker that is still open: it waits.
    assert store.count_breaker_failure("c", 100.0, 1, 60.0, 130.0, "e")
    suspend_on(store, "waiting", "perdure.breaker:c", wake_at=130.0)
    record = store.get_workflow("waiting")
    assert record is not None and record.wake_at == 130.0


def test_async_steps_park_on_a_breaker_and_resume_when_it_closes(make_app) -> None:
    clock = OffsetClock()
    app = make_app(clock=clock, suspend_after=0.2)
    payments = Payments(lambda: app.store)
    breaker = perdure.CircuitBreaker("payments", failure_threshold=1, cooldown=600)

    @app.step(
        name="charge",
        breaker=breaker,
        retry=perdure.Retry(max_attempts=3, initial_interval=600, jitter=0),
    )
    async def charge(order: int) -> str:
        return await asyncio.to_thread(payments.charge, order)

    @app.workflow(name="checkout")
    async def checkout(order: int) -> str:
        return await charge(order)

    with app:
        app.start("checkout", 0, workflow_id="opener")  # type: ignore[arg-type]
        wait_for(lambda: app.breaker("payments").state == "OPEN", what="the breaker to open")
        app.start("checkout", 1, workflow_id="parked")  # type: ignore[arg-type]
        wait_for(lambda: all_suspended(app, clock, ["opener", "parked"]), what="parking")
        assert app.breaker("payments").parked == 1
        payments.up = True
        advance(clock, 601, app)
        assert app.retrieve("opener").result(timeout=20) == "charged-0"
        assert app.retrieve("parked").result(timeout=20) == "charged-1"
    assert payments.calls.count("HALF_OPEN") == 1 and "OPEN" not in payments.calls
    assert app.breaker("payments").state == "CLOSED"


# -- migration 0004 --------------------------------------------------------------------------


def test_a_migration_numbered_below_the_newest_applied_still_applies(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrations developed side by side may reach a database in either order: a
    database at a newer version still gets an older-numbered one when it ships. (Numbers
    past the real ones, so that no real migration's dependencies matter.)"""
    from perdure.storage import _postgres, _queries, _sqlite

    dialect = "sqlite" if database_url.startswith("sqlite") else "postgres"
    late = (1001, "CREATE TABLE perdure_late (id INTEGER PRIMARY KEY);")
    shipped = [*_queries.migrations(dialect), late]
    module = _sqlite if dialect == "sqlite" else _postgres
    monkeypatch.setattr(module, "migrations", lambda _: shipped)
    store = open_store(database_url)
    store.migrate()
    store.close()
    sibling = (1000, "CREATE TABLE perdure_sibling (id INTEGER PRIMARY KEY);")
    monkeypatch.setattr(module, "migrations", lambda _: sorted([*shipped, sibling]))
    store = open_store(database_url)
    try:
        store.migrate()
        store.migrate()  # idempotent
        assert store.get_breaker("none") is None  # 0004 is there
        if dialect == "sqlite":
            import sqlite3

            path = database_url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path)) as conn:
                versions = [v for (v,) in conn.execute("SELECT version FROM perdure_schema")]
                assert conn.execute("SELECT count(*) FROM perdure_sibling").fetchone() == (0,)
        else:
            from conftest import admin_connection, schema_of

            with admin_connection(database_url, schema_of(database_url)) as conn:
                versions = [v for (v,) in conn.execute("SELECT version FROM perdure_schema")]
                assert conn.execute("SELECT count(*) FROM perdure_sibling").fetchone() == (0,)
        # Every shipped version, the sibling among them.
        assert sorted(versions) == sorted(v for v, _ in [*shipped, sibling])
        assert 1000 in versions
    finally:
        store.close()


# -- with cancellation and deadlines ---------------------------------------------------------


def test_a_cancel_reaches_workflows_suspended_on_a_retry_a_probe_or_a_breaker(make_app) -> None:
    """A workflow waiting for its next attempt, its probe or a breaker is woken by a
    cancel and gets ``Cancelled`` there, instead of suspending again."""
    clock = OffsetClock()
    app = make_app(clock=clock, suspend_after=0.2)
    payments = Payments(lambda: app.store)
    breaker = perdure.CircuitBreaker("payments", failure_threshold=1, cooldown=6000)
    undone: list[str] = []

    @app.step(name="refund")
    def refund(order: int) -> None:
        undone.append(f"refund-{order}")

    @app.step(
        name="charge",
        breaker=breaker,
        retry=perdure.Retry(
            max_attempts=5,
            initial_interval=600,
            max_interval=600,
            jitter=0,
            wait_for=lambda: False,
            probe_interval=600,
            probe_max_interval=600,
        ),
    )
    def charge(order: int) -> str:
        return payments.charge(order)

    @app.workflow(name="checkout")
    def checkout(order: int) -> str:
        try:
            return charge(order)
        except perdure.Cancelled:
            refund(order)
            raise

    with app:
        app.start("checkout", 0, workflow_id="retrying")  # type: ignore[arg-type]
        wait_for(lambda: app.breaker("payments").state == "OPEN", what="the breaker to open")
        app.start("checkout", 1, workflow_id="parked")  # type: ignore[arg-type]
        wait_for(lambda: all_suspended(app, clock, ["retrying", "parked"]), what="suspension")
        # The first one's backoff ends (the breaker's cool-down does not): its probe fails,
        # and it waits for the next probe.
        advance(clock, 601, app)
        wait_for(
            lambda: bool(app.retrieve("retrying").status().steps[0].waiting_for),
            what="a failed probe",
        )
        wait_for(lambda: all_suspended(app, clock, ["retrying", "parked"]), what="suspension")
        waits = {
            wid: app.retrieve(wid).status().waiting_for or "" for wid in ("retrying", "parked")
        }
        assert waits["retrying"].startswith("probe ")
        assert waits["parked"].startswith("circuit breaker 'payments' to close")
        for workflow_id in ("retrying", "parked"):
            assert app.cancel(workflow_id) is True
            with pytest.raises(perdure.WorkflowCancelledError):
                app.retrieve(workflow_id).result(timeout=20)
    assert sorted(undone) == ["refund-0", "refund-1"]
    assert payments.calls == ["CLOSED"]
