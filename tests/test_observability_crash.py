"""One trace through a SIGKILL and a takeover, with real worker processes, on both stores.

The app is ``tests/otel_app.py``: its workers export their spans to a file. The test
starts a workflow inside a span of its own (the trace context is stored with the
workflow), kills the worker that runs it with SIGKILL in the middle of a step, and
lets another worker process take the workflow over. Every span that either worker
exported for the workflow belongs to the trace stored at start, and the second
worker's JSON log lines (``perdure worker --log-format json``) name the workflow, the
step, the attempt and the executor.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from perdure import observability

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parent


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("perdure_otel_app", TESTS_DIR / "otel_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


otel_app = _load_app()


class Worker:
    """``perdure worker otel_app:app --log-format json``, its stderr in a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], number: int) -> None:
        self.stderr_path = tmp_path / f"worker-{number}.err"
        command = [sys.executable, "-m", "perdure", "worker", "otel_app:app"]
        with (
            open(tmp_path / f"worker-{number}.out", "wb") as out,
            open(self.stderr_path, "wb") as err,
        ):
            self.proc = subprocess.Popen(
                [*command, "--log-format", "json"],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def log(self) -> list[dict[str, Any]]:
        """Its JSON log records (click's own lines on stderr are not JSON)."""
        lines = self.stderr_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def workers(tmp_path: Path, database_url: str) -> Iterator[Callable[[], Worker]]:
    env = dict(os.environ)
    env["PERDURE_DATABASE_URL"] = database_url
    env["PERDURE_SPANS"] = str(tmp_path / "spans.jsonl")
    env["PERDURE_MARKERS"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    started: list[Worker] = []

    def start() -> Worker:
        started.append(Worker(tmp_path, env, len(started) + 1))
        return started[-1]

    yield start
    for worker in started:
        worker.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_trace_survives_a_sigkill_and_a_takeover_by_another_worker(
    tmp_path: Path, database_url: str, workers: Callable[[], Worker]
) -> None:
    provider = TracerProvider()
    observability.configure(tracer_provider=provider)
    client = otel_app.build_app(database_url)
    try:
        with provider.get_tracer("tests").start_as_current_span("order request") as caller:
            handle = client.start("order", "A-7")
    finally:
        observability.configure(None, None)
    trace_id = format(caller.get_span_context().trace_id, "032x")
    caller_id = format(caller.get_span_context().span_id, "016x")
    workflow_id = handle.workflow_id

    first = workers()
    wait_for(lambda: (tmp_path / f"ship-{first.proc.pid}").exists(), "the first worker to ship")
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=10) == -signal.SIGKILL
    (tmp_path / "release").touch()
    second = workers()
    try:
        assert handle.result(timeout=60) == ["prepared A-7", "shipped A-7"]
    finally:
        client.shutdown()
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(timeout=30) == 0

    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    ours = [s for s in spans if s["attributes"].get("perdure.workflow.id") == workflow_id]
    killed, survivor = first.proc.pid, second.proc.pid
    # Both processes exported spans of the workflow: one trace, the caller's.
    assert {s["pid"] for s in ours} == {killed, survivor}
    assert {s["trace_id"] for s in ours} == {trace_id}
    steps = [
        (s["pid"], s["name"], s["attributes"]["perdure.step.attempt"])
        for s in ours
        if s["name"].startswith("step ")
    ]
    assert (killed, "step prepare", 1) in steps
    # The step in flight at the kill ran again (attempt 1 again: nothing was recorded).
    assert (survivor, "step ship", 1) in steps
    assert (survivor, "step prepare", 1) not in steps  # recorded: replayed, not run
    # The recovered execution is a child of the span that started the workflow.
    (recovered,) = [s for s in ours if s["name"] == "workflow order" and s["pid"] == survivor]
    assert recovered["parent_id"] == caller_id
    assert recovered["attributes"]["perdure.workflow.outcome"] == "SUCCEEDED"
    executor = recovered["attributes"]["perdure.executor.id"]
    assert f":{survivor}:" in executor
    (shipped,) = [s for s in ours if s["name"] == "step ship" and s["pid"] == survivor]
    assert shipped["parent_id"] == recovered["span_id"]

    # --log-format json: one object per record, with the run's fields.
    (line,) = [r for r in second.log() if r["message"] == "shipping A-7"]
    assert {key: line[key] for key in observability.FIELDS} == {
        "workflow_id": workflow_id,
        "workflow_name": "order",
        "executor": executor,
        "step": "ship",
        "position": "1",
        "attempt": 1,
    }
    assert (line["level"], line["logger"]) == ("INFO", "shop")
    assert (line["trace_id"], line["span_id"]) == (trace_id, shipped["span_id"])
    started = [r for r in second.log() if r["message"].startswith("executor ")]
    assert started and started[0]["workflow_id"] is None
