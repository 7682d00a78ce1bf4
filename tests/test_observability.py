"""Traces, metrics and structured logs, in process, on both stores: OpenTelemetry's
in-memory span exporter and metric reader, the Prometheus ``/metrics`` endpoint, log
records' fields, and the core without OpenTelemetry (a process where it can't be
imported). The trace across a SIGKILL and a takeover: ``test_observability_crash.py``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families
from test_web_api import serving

import perdure
from perdure import _telemetry, observability

TOKEN = "metrics-token-for-the-tests-0123"
SRC = Path(__file__).resolve().parent.parent / "src"


class Telemetry:
    """perdure's spans and metrics in memory, for one test."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("tests")

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The data points of ``metric`` by their sorted attributes."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for each in scope.metrics:
                    if each.name == metric:
                        for point in each.data.data_points:
                            found[tuple(sorted(point.attributes.items()))] = point
        return found


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    observability.configure(telemetry.tracer_provider, telemetry.meter_provider)
    yield telemetry
    observability.configure(None, None)
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def suspended_on(app: perdure.App, workflow_id: str, topic: str) -> Callable[[], bool]:
    def check() -> bool:
        record = app.store.get_workflow(workflow_id)
        return record is not None and record.owner is None and record.wait_topic == topic

    return check


def hex_id(value: int, width: int = 32) -> str:
    return format(value, f"0{width}x")


def test_spans_per_execution_and_attempt_carry_the_trace_into_children_and_messages(
    make_app: Callable[..., perdure.App], otel: Telemetry
) -> None:
    app = make_app()
    calls: list[int] = []

    @app.step(
        name="reserve", retry=perdure.Retry(max_attempts=3, initial_interval=0.01, jitter=0.0)
    )
    def reserve(n: int) -> int:
        calls.append(n)
        if len(calls) == 1:
            raise RuntimeError("the first attempt fails")
        return n + 1

    @app.step(name="pack")
    def pack(n: int) -> int:
        return 2 * n

    @app.workflow(name="ship")
    def ship(n: int) -> str:
        return f"shipped {pack(n)}"

    @app.workflow(name="order")
    def order(n: int) -> list[Any]:
        reserved = reserve(n)
        shipped = app.start(ship, reserved).result()
        return [shipped, perdure.recv("go", timeout=60)]

    @app.workflow(name="waiter")
    def waiter() -> Any:
        return perdure.recv("never")

    with app:
        with otel.tracer.start_as_current_span("checkout request") as caller:
            handle = app.start(order, 1)
            parked = app.start(waiter)
        wait_for(suspended_on(app, handle.workflow_id, "go"), "the order to wait for 'go'")
        # The sender's own trace: the receiver's span links to it.
        with otel.tracer.start_as_current_span("approval") as sender:
            app.send(handle.workflow_id, "approved", topic="go")
        assert handle.result(timeout=30) == ["shipped 4", "approved"]
        wait_for(suspended_on(app, parked.workflow_id, "never"), "the waiter to suspend")
        app.open_breaker("payments", 300)

        trace_id = caller.get_span_context().trace_id
        stored = app.store.get_workflow(handle.workflow_id)
        assert stored is not None and stored.trace_context is not None
        assert hex_id(trace_id) in json.loads(stored.trace_context)["traceparent"]

        child_id = f"{handle.workflow_id}/1"
        ours = [
            s
            for s in otel.finished()
            if s.attributes
            and s.attributes.get("perdure.workflow.id") in (handle.workflow_id, child_id)
        ]
        # Every span of the workflow and its child is in the starter's trace.
        assert ours and {s.context.trace_id for s in ours} == {trace_id}

        # One span per execution: the first ended suspended at recv, the message woke
        # the last; each is a child of the caller's span.
        runs = [s for s in otel.finished("workflow order")]
        assert len(runs) >= 2
        assert all(s.parent is not None for s in runs)
        assert {s.parent.span_id for s in runs if s.parent} == {caller.get_span_context().span_id}
        assert runs[0].attributes["perdure.workflow.outcome"] == "Suspended"
        assert runs[-1].attributes["perdure.workflow.outcome"] == "SUCCEEDED"
        executor = app.client.worker.id if app.client.worker else None
        assert {s.attributes["perdure.executor.id"] for s in runs} == {executor}
        run_ids = {s.context.span_id for s in runs}

        # One span per step attempt, a child of its execution's span.
        attempts = otel.finished("step reserve")
        assert [
            (
                s.attributes["perdure.workflow.id"],
                s.attributes["perdure.workflow.name"],
                s.attributes["perdure.step.name"],
                s.attributes["perdure.step.position"],
                s.attributes["perdure.step.attempt"],
                s.attributes["perdure.step.outcome"],
            )
            for s in attempts
        ] == [
            (handle.workflow_id, "order", "reserve", "0", 1, "failed"),
            (handle.workflow_id, "order", "reserve", "0", 2, "succeeded"),
        ]
        assert all(s.parent is not None and s.parent.span_id in run_ids for s in attempts)
        assert attempts[0].status.status_code is StatusCode.ERROR
        assert attempts[0].events[0].name == "exception"

        # The child continues the execution of its parent that started it.
        (child_run,) = otel.finished("workflow ship")
        assert child_run.attributes["perdure.workflow.id"] == child_id
        assert child_run.parent is not None and child_run.parent.span_id in run_ids
        (packed,) = otel.finished("step pack")
        assert packed.parent is not None and packed.parent.span_id == child_run.context.span_id

        # The message: a span in the receiver's trace, linked to the sender's.
        (received,) = otel.finished("recv go")
        assert received.context.trace_id == trace_id
        assert received.attributes["perdure.message.topic"] == "go"
        (link,) = received.links
        assert link.context.trace_id == sender.get_span_context().trace_id != trace_id
        assert link.context.span_id == sender.get_span_context().span_id

        # Metrics, read back.
        assert _counts(otel.points("perdure.workflows.started")) == {
            (("perdure.workflow.name", "order"),): 1,
            (("perdure.workflow.name", "ship"),): 1,
            (("perdure.workflow.name", "waiter"),): 1,
        }
        assert _counts(otel.points("perdure.workflows.finished")) == {
            (("perdure.workflow.name", "order"), ("perdure.workflow.status", "SUCCEEDED")): 1,
            (("perdure.workflow.name", "ship"), ("perdure.workflow.status", "SUCCEEDED")): 1,
        }
        assert _counts(otel.points("perdure.step.retries")) == {
            (("perdure.step.name", "reserve"), ("perdure.workflow.name", "order")): 1
        }
        durations = otel.points("perdure.step.duration")
        assert {key: point.count for key, point in durations.items()} == {
            _key(step="reserve", outcome="failed", workflow="order"): 1,
            _key(step="reserve", outcome="succeeded", workflow="order"): 1,
            _key(step="pack", outcome="succeeded", workflow="ship"): 1,
        }
        assert all(point.sum >= 0 for point in durations.values())
        assert _counts(otel.points("perdure.workflows.suspended")) == {
            (("perdure.workflow.name", "waiter"),): 1
        }
        assert _counts(otel.points("perdure.breaker.state")) == {
            (("perdure.breaker", "payments"), ("perdure.breaker.state", "CLOSED")): 0,
            (("perdure.breaker", "payments"), ("perdure.breaker.state", "HALF_OPEN")): 0,
            (("perdure.breaker", "payments"), ("perdure.breaker.state", "OPEN")): 1,
        }


def _counts(points: dict[tuple[tuple[str, Any], ...], Any]) -> dict[Any, Any]:
    return {key: point.value for key, point in points.items()}


def _key(step: str, outcome: str, workflow: str) -> tuple[tuple[str, Any], ...]:
    return (
        ("perdure.step.name", step),
        ("perdure.step.outcome", outcome),
        ("perdure.workflow.name", workflow),
    )


def test_a_workflow_started_outside_any_trace_keeps_one_trace_across_executions(
    make_app: Callable[..., perdure.App], otel: Telemetry
) -> None:
    app = make_app()

    @app.workflow(name="napping")
    def napping() -> str:
        perdure.recv("wake")
        return "awake"

    with app:
        handle = app.start(napping)
        wait_for(suspended_on(app, handle.workflow_id, "wake"), "the workflow to suspend")
        app.send(handle.workflow_id, None, topic="wake")
        assert handle.result(timeout=30) == "awake"
    record = app.store.get_workflow(handle.workflow_id)
    assert record is not None and record.trace_context is None
    runs = otel.finished("workflow napping")
    assert len(runs) == 2
    # No stored context: a parent derived from the workflow, the same for each execution.
    assert len({s.context.trace_id for s in runs}) == 1
    assert len({s.parent.span_id for s in runs if s.parent}) == 1


def test_log_records_carry_the_workflow_step_attempt_and_executor(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler = Keep()
    handler.addFilter(observability.LogContextFilter())
    shop, own = logging.getLogger("shop"), logging.getLogger("perdure")
    for logger in (shop, own):
        logger.addHandler(handler)
    shop.setLevel(logging.INFO)
    failures: list[str] = []

    @app.step(name="charge", retry=perdure.Retry(max_attempts=2, initial_interval=0.01, jitter=0.0))
    def charge(order: str) -> str:
        shop.info("charging %s", order)
        if not failures:
            failures.append(order)
            raise RuntimeError("declined once")
        return f"charged {order}"

    @app.step(name="notify")
    async def notify(order: str) -> str:
        shop.info("notifying %s", order)
        return f"notified {order}"

    @app.workflow(name="pay")
    def pay(order: str) -> str:
        shop.info("paying %s", order)
        return charge(order)

    @app.workflow(name="tell")
    async def tell(order: str) -> str:
        shop.info("telling %s", order)
        (told,) = await asyncio.gather(notify(order))
        return told

    try:
        with app:
            paid = app.start(pay, "A-1")
            told = app.start(tell, "A-2")
            assert paid.result(timeout=30) == "charged A-1"
            assert told.result(timeout=30) == "notified A-2"
            executor = app.client.worker.id if app.client.worker else None
        shop.info("outside any workflow")
    finally:
        for logger in (shop, own):
            logger.removeHandler(handler)

    def fields(record: logging.LogRecord) -> tuple[Any, ...]:
        return tuple(getattr(record, name) for name in observability.FIELDS)

    by_message = {r.getMessage(): r for r in kept if r.name == "shop"}
    pay_id, tell_id = paid.workflow_id, told.workflow_id
    assert fields(by_message["paying A-1"]) == (pay_id, "pay", executor, None, None, None)
    charging = [fields(r) for r in kept if r.getMessage() == "charging A-1"]
    assert charging == [
        (pay_id, "pay", executor, "charge", "0", 1),
        (pay_id, "pay", executor, "charge", "0", 2),
    ]
    assert fields(by_message["telling A-2"]) == (tell_id, "tell", executor, None, None, None)
    # An async step, run by the task gather made of it.
    assert fields(by_message["notifying A-2"]) == (tell_id, "tell", executor, "notify", "0", 1)
    assert fields(by_message["outside any workflow"]) == (None,) * 6
    # perdure's own record of the failed attempt names the attempt too.
    (retry,) = [r for r in kept if r.name == "perdure" and "attempt 1 failed" in r.getMessage()]
    assert fields(retry) == (pay_id, "pay", executor, "charge", "0", 1)

    line = observability.JsonFormatter().format(by_message["paying A-1"])
    entry = json.loads(line)
    assert "\n" not in line
    assert (entry["level"], entry["logger"], entry["message"]) == ("INFO", "shop", "paying A-1")
    assert (entry["workflow_id"], entry["workflow_name"], entry["executor"]) == (
        pay_id,
        "pay",
        executor,
    )


def test_metrics_endpoint_serves_prometheus_text(make_app: Callable[..., perdure.App]) -> None:
    # No meter provider configured: the API makes perdure one of its own.
    observability.configure(None, None)
    app = make_app()
    name = f"hello-{uuid.uuid4().hex[:8]}"

    @app.step(name="greet")
    def greet(who: str) -> str:
        return f"hello {who}"

    @app.workflow(name=name)
    def hello(who: str) -> str:
        return greet(who)

    @app.workflow(name=f"{name}-waiting")
    def waiting() -> Any:
        return perdure.recv("never")

    try:
        with app, serving(app, token=TOKEN) as base:
            assert app.run(hello, "you") == "hello you"
            parked = app.start(waiting)
            wait_for(suspended_on(app, parked.workflow_id, "never"), "the workflow to suspend")
            # Over real HTTP (uvicorn); the API's token guards it.
            assert httpx.get(f"{base}/metrics").status_code == 401
            answer = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        observability.configure(None, None)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }

    def value(metric: str, **labels: str) -> float | None:
        for (found, have), number in samples.items():
            if found == metric and set(labels.items()) <= set(have):
                return number
        return None

    assert value("perdure_workflows_started_total", perdure_workflow_name=name) == 1
    assert (
        value(
            "perdure_workflows_finished_total",
            perdure_workflow_name=name,
            perdure_workflow_status="SUCCEEDED",
        )
        == 1
    )
    assert (
        value(
            "perdure_step_duration_seconds_count",
            perdure_workflow_name=name,
            perdure_step_name="greet",
        )
        == 1
    )
    assert value("perdure_workflows_suspended", perdure_workflow_name=f"{name}-waiting") == 1


def test_the_core_runs_without_opentelemetry(tmp_path: Path) -> None:
    # A process in which opentelemetry and prometheus_client cannot be imported.
    script = textwrap.dedent(
        """
        import sys
        for blocked in ("opentelemetry", "prometheus_client"):
            sys.modules[blocked] = None
        import logging, json
        import perdure
        from perdure import _telemetry, observability

        assert not observability.AVAILABLE
        app = perdure.App(sys.argv[1], poll_interval=0.05)

        @app.step
        def double(n: int) -> int:
            logging.getLogger("shop").warning("doubling %d", n)
            return 2 * n

        @app.workflow
        def twice(n: int) -> int:
            return double(n)

        handler = logging.StreamHandler(sys.stdout)
        handler.addFilter(observability.LogContextFilter())
        handler.setFormatter(observability.JsonFormatter())
        logging.getLogger("shop").addHandler(handler)
        with app:
            assert app.run(twice, 21) == 42
        # The web extra without the otel one (FastAPI brings the OpenTelemetry API, not
        # the Prometheus exporter): /metrics says what to install.
        del sys.modules["opentelemetry"]
        import asyncio

        import httpx

        from perdure.web import create_app

        async def get_metrics():
            transport = httpx.ASGITransport(app=create_app(app, token="t" * 20))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                return await c.get("/metrics", headers={"Authorization": "Bearer " + "t" * 20})

        answer = asyncio.run(get_metrics())
        assert answer.status_code == 501 and "perdure[otel]" in answer.text, answer.text
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path / 'plain.db'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    logged, result = done.stdout.splitlines()
    assert result == "ok"
    entry = json.loads(logged)
    assert (entry["message"], entry["workflow_name"], entry["step"]) == (
        "doubling 21",
        "twice",
        "double",
    )
    assert "trace_id" not in entry


def test_json_log_lines_are_cleaned_of_secrets() -> None:
    formatter = observability.JsonFormatter(clean=lambda text: text.replace("hunter2", "***"))
    try:
        raise RuntimeError("cannot connect to postgresql://app:hunter2@db/shop")
    except RuntimeError:
        record = logging.getLogger("shop").makeRecord(
            "shop",
            logging.ERROR,
            __file__,
            1,
            "lost %s",
            ("postgresql://app:hunter2@db/shop",),
            sys.exc_info(),
            extra={"url": "postgresql://app:hunter2@db/shop", "tries": 3},
        )
    line = formatter.format(record)
    assert "hunter2" not in line
    entry = json.loads(line)
    assert entry["message"] == "lost postgresql://app:***@db/shop"
    assert (entry["url"], entry["tries"]) == ("postgresql://app:***@db/shop", 3)
    assert "RuntimeError: cannot connect to postgresql://app:***@db/shop" in entry["exception"]
    assert entry["workflow_id"] is None


class _ProxyMeterProvider:
    """What ``opentelemetry.metrics.get_meter_provider`` returns while none is set (its
    class is private: perdure knows it by its name)."""


def test_unset_global_providers_are_looked_up_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each lookup of an unset global provider reads os.environ: not four times a workflow.
    looked: list[str] = []

    def tracing() -> Any:
        looked.append("tracer")
        return trace.ProxyTracerProvider()

    def metering() -> Any:
        looked.append("meter")
        return _ProxyMeterProvider()

    monkeypatch.setattr(_telemetry, "_globals", _telemetry._Globals())
    monkeypatch.setattr(trace, "get_tracer_provider", tracing)
    monkeypatch.setattr(metrics, "get_meter_provider", metering)
    observability.configure(None, None)
    for _ in range(5):
        assert _telemetry.tracer() is None and _telemetry.instruments() is None
    assert looked == ["tracer", "meter"]
    observability.configure(None, None)  # configure looks again at once
    assert _telemetry.tracer() is None
    assert looked == ["tracer", "meter"] * 2
    # Once set, a global provider is kept (OpenTelemetry sets one once).
    telemetry = Telemetry()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: telemetry.tracer_provider)
    observability.configure(None, None)
    assert _telemetry.tracer() is not None
    monkeypatch.setattr(trace, "get_tracer_provider", tracing)
    observability.configure(None, None)
    assert _telemetry.tracer() is not None
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()
