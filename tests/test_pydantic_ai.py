"""perdure.integrations.pydantic_ai: durable Pydantic AI agents, offline (TestModel and
FunctionModel), on both stores: a run's model requests and tool calls are steps, its text
goes to a perdure stream, an approval waits suspended in ``perdure.recv``, and a worker
SIGKILLed mid-run resumes without repeating a finished model call or tool call."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

# Pydantic AI 2.x needs Python 3.11 or later (perdure[pydantic-ai] installs it there).
pytest.importorskip("pydantic_ai")

from agent_app import ANSWER, build_app, forecast, ledger_counts
from ledger import wait_for
from pydantic_ai import Agent, DeferredToolResults, ModelResponse, RunContext, ToolReturnPart  # noqa: E402
from pydantic_ai.capabilities import RequestInput  # noqa: E402
from pydantic_ai.messages import ModelMessage, TextPart, ToolCallPart  # noqa: E402
from pydantic_ai.models.function import AgentInfo, FunctionModel  # noqa: E402
from pydantic_ai.models.test import TestModel  # noqa: E402

import perdure
import perdure.integrations.pydantic_ai as integration  # noqa: E402
from perdure.integrations.pydantic_ai import (  # noqa: E402
    PerdureDurability,
    _token,
    ask_via_stream,
    fail,
    resolve,
)

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def ledger_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("PERDURE_LEDGER", str(path))
    monkeypatch.chdir(tmp_path)
    return path


def test_run_records_each_model_request_and_tool_call_as_a_step(
    make_app: Callable[..., perdure.App], ledger_path: Path
) -> None:
    app = make_app()
    app.workflow(name="forecast")(forecast)
    with app:
        handle = app.start("forecast", "Umbrella in Paris?", workflow_id="rain-1")
        assert handle.result(timeout=60) == "".join(ANSWER)
        steps = [step.name for step in handle.status().steps]
        # The tokens of the answer, read back from the stream, in order.
        assert list(app.read_stream("rain-1", "tokens")) == list(ANSWER)

    assert steps.count("weather__model.request_stream") == 3
    assert "weather__function_toolset__<agent>.call_tool:get_weather" in steps
    assert "weather__function_toolset__<agent>.call_tool:to_fahrenheit" in steps
    assert ledger_counts(ledger_path, "rain-1") == {
        "turn-1": 1,
        "turn-2": 1,
        "turn-3": 1,
        "get_weather": 1,
        "to_fahrenheit": 1,
    }


def test_test_model_agent_runs_in_a_workflow_and_unchanged_outside(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    other = TestModel(custom_output_text="the other model", call_tools=[])
    agent = Agent(
        TestModel(),
        name="adder",
        capabilities=[PerdureDurability(models={"b": other}, stream="text")],
    )
    calls: list[tuple[int, int]] = []

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        calls.append((a, b))
        return a + b

    @app.workflow
    async def adding(question: str) -> str:
        return (await agent.run(question)).output

    @app.workflow
    async def picking(question: str) -> str:
        # A registered model, picked for one run: its requests are steps of its own.
        return (await agent.run(question, model=other)).output

    with app:
        handle = app.start(adding, "1 + 2?")
        assert handle.result(timeout=60) == '{"add":0}'
        assert "".join(app.read_stream(handle.workflow_id, "text")) == '{"add":0}'
        picked = app.start(picking, "which model?")
        assert picked.result(timeout=60) == "the other model"
        assert [step.name for step in picked.status().steps][-1] == "adder__model.request_stream.b"
    assert calls == [(0, 0)]
    # Outside a workflow the agent is a plain agent: nothing recorded, nothing refused.
    # (asyncio.run, not agent.run_sync: run_sync leaves a new event loop set on the
    # thread, never closed, and a later test would meet its ResourceWarning.)
    assert asyncio.run(agent.run("again")).output == '{"add":0}'
    assert calls == [(0, 0), (0, 0)]


def test_step_options_retry_a_failed_model_request_and_tool_call(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    attempts = {"model": 0, "tool": 0}

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        attempts["model"] += 1
        if attempts["model"] == 1:
            raise ConnectionError("the model's service is down")
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("lookup", {"key": "a"}, tool_call_id="l1")])
        return ModelResponse(parts=[TextPart("done")])

    once = perdure.Retry(max_attempts=2, initial_interval=0, jitter=0)
    agent = Agent(
        FunctionModel(model),
        name="retrying",
        capabilities=[PerdureDurability(model_step={"retry": once})],
    )

    @agent.tool_plain(metadata={"perdure": {"retry": once}})
    def lookup(key: str) -> str:
        attempts["tool"] += 1
        if attempts["tool"] == 1:
            raise ConnectionError("the tool's service is down")
        return key.upper()

    @app.workflow
    async def retried(question: str) -> str:
        return (await agent.run(question)).output

    with app:
        handle = app.start(retried, "look a up")
        assert handle.result(timeout=60) == "done"
        steps = [(step.name, step.attempts) for step in handle.status().steps]
    tool = "retrying__function_toolset__<agent>.call_tool:lookup"
    assert [attempts for name, attempts in steps if name == tool] == [2]
    model = [attempts for name, attempts in steps if name == "retrying__model.request"]
    assert model == [2, 1]
    assert attempts == {"model": 3, "tool": 2}


def test_bad_step_options_are_refused_clearly() -> None:
    with pytest.raises(perdure.ConfigurationError, match="model_step"):
        PerdureDurability(model_step={"retries": 3})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(perdure.ConfigurationError, match="perdure.Retry"):
        PerdureDurability(tool_step={"retry": 3})  # type: ignore[typeddict-item]
    with pytest.raises(perdure.ConfigurationError, match="stream= or event_stream_handler="):
        PerdureDurability(stream="tokens", event_stream_handler=lambda ctx, events: None)  # type: ignore[arg-type,return-value]


def test_parallel_tool_calls_replay_into_the_right_calls(
    make_app: Callable[..., perdure.App],
) -> None:
    ran: list[str] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = {
            part.tool_call_id: part.content
            for message in messages
            for part in getattr(message, "parts", [])
            if isinstance(part, ToolReturnPart)
        }
        if not returns:
            calls = [ToolCallPart("slow", {"x": 1}, "c1"), ToolCallPart("fast", {"x": 2}, "c2")]
            return ModelResponse(parts=calls)
        return ModelResponse(parts=[TextPart(f"{returns['c1']} {returns['c2']}")])

    agent = Agent(FunctionModel(model), name="parallel", capabilities=[PerdureDurability()])

    @agent.tool_plain
    async def slow(x: int) -> str:
        await asyncio.sleep(0.2)  # ends after fast, which started after it
        ran.append("slow")
        return f"slow:{x}"

    @agent.tool_plain
    async def fast(x: int) -> str:
        ran.append("fast")
        return f"fast:{x}"

    app = make_app(suspend_after=0)

    @app.workflow
    async def both(question: str) -> list[str]:
        result = await agent.run(question)
        await perdure.sleep_async(0.2)  # suspends: the run replays from the top
        # Computed by the replay that finishes, from the tool calls' records.
        returns = [
            f"{part.tool_call_id}={part.content}"
            for message in result.all_messages()
            for part in getattr(message, "parts", [])
            if isinstance(part, ToolReturnPart)
        ]
        return [result.output, *sorted(returns)]

    with app:
        assert app.run(both, "go") == ["slow:1 fast:2", "c1=slow:1", "c2=fast:2"]
    assert ran == ["fast", "slow"]


# -- approvals ------------------------------------------------------------------------------


def approval_agent(
    timeout: timedelta | None, refunds: list[int], ask: Any = None
) -> Agent[None, str]:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [
            part
            for message in messages
            for part in getattr(message, "parts", [])
            if isinstance(part, ToolReturnPart)
        ]
        if not returns:
            return ModelResponse(parts=[ToolCallPart("refund", {"amount": 40}, tool_call_id="r1")])
        return ModelResponse(parts=[TextPart(f"refund: {returns[0].content}")])

    agent = Agent(
        FunctionModel(model),
        name="refunds",
        capabilities=[
            PerdureDurability(),
            RequestInput(ask=ask or ask_via_stream("requests"), timeout=timeout),
        ],
    )

    @agent.tool(requires_approval=True)
    def refund(ctx: RunContext[None], amount: int) -> str:
        refunds.append(amount)
        return f"refunded {amount}"

    return agent


def test_approval_waits_suspended_in_recv_until_resolved(
    make_app: Callable[..., perdure.App],
) -> None:
    refunds: list[int] = []
    agent = approval_agent(None, refunds)
    # suspend_after=0: every wait suspends at once, holding no thread.
    app = make_app(suspend_after=0)

    @app.workflow
    async def support(question: str) -> str:
        return (await agent.run(question)).output

    with app:
        handle = app.start(support, "refund me", workflow_id="refund-1")
        request = next(iter(app.read_stream("refund-1", "requests")))
        assert request["approvals"] == [
            {"tool_call_id": "r1", "tool_name": "refund", "args": {"amount": 40}}
        ]

        def suspended() -> bool:
            status = handle.status()
            return status.waiting_for is not None and "message on topic" in status.waiting_for

        wait_for(suspended, 30, "the workflow suspended in recv")
        assert refunds == []
        resolve(app, request["token"], DeferredToolResults(approvals={"r1": True}))
        assert handle.result(timeout=60) == "refund: refunded 40"
    assert refunds == [40]


def test_approval_times_out_or_fails_into_a_denial(
    make_app: Callable[..., perdure.App],
) -> None:
    refunds: list[int] = []
    app = make_app()
    timed = approval_agent(timedelta(seconds=0.5), refunds)
    waiting = approval_agent(None, refunds)

    @app.workflow
    async def timing_out(question: str) -> str:
        return (await timed.run(question)).output

    @app.workflow
    async def failing(question: str) -> str:
        return (await waiting.run(question)).output

    with app:
        assert app.run(timing_out, "refund me").startswith("refund: No decision")
        handle = app.start(failing, "refund me", workflow_id="refund-2")
        request = next(iter(app.read_stream("refund-2", "requests")))
        fail(app, request["token"], "the manager said no")
        assert "the manager said no" in handle.result(timeout=60)
    assert refunds == []
    with pytest.raises(ValueError, match="not a perdure resume token"):
        resolve(app, "nonsense", {})


def test_an_ask_that_answers_at_once_is_recorded_and_not_asked_again(
    make_app: Callable[..., perdure.App],
) -> None:
    refunds: list[int] = []
    asked: list[str] = []

    def ask(ctx: RunContext[None], requests: Any, token: str) -> DeferredToolResults:
        asked.append(token)
        return DeferredToolResults(approvals={"r1": True})

    agent = approval_agent(None, refunds, ask)
    app = make_app(suspend_after=0)

    @app.workflow
    async def support(question: str) -> str:
        answer = (await agent.run(question)).output
        await perdure.sleep_async(0.2)  # suspends: the run replays once more
        return answer

    with app:
        assert app.run(support, "refund me") == "refund: refunded 40"
    assert len(asked) == 1
    assert refunds == [40]


def test_cancel_reaches_a_run_waiting_for_approval(
    make_app: Callable[..., perdure.App],
) -> None:
    refunds: list[int] = []
    agent = approval_agent(None, refunds)
    app = make_app(suspend_after=0)

    @app.workflow
    async def support(question: str) -> str:
        return (await agent.run(question)).output

    with app:
        handle = app.start(support, "refund me", workflow_id="refund-3")
        next(iter(app.read_stream("refund-3", "requests")))
        assert app.cancel("refund-3")
        with pytest.raises(perdure.WorkflowCancelledError):
            handle.result(timeout=60)
    assert refunds == []


def test_sync_workflow_is_refused_with_a_clear_error(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    agent = Agent(TestModel(), name="plain", capabilities=[PerdureDurability()])

    @app.workflow
    def synchronous(question: str) -> str:
        # (agent.run_sync would do the same, and leave its event loop in the pool thread.)
        return asyncio.run(agent.run(question)).output

    with app:
        handle = app.start(synchronous, "hi")
        with pytest.raises(perdure.ConfigurationError, match="async def"):
            handle.result(timeout=60)


# -- a worker killed mid-run ----------------------------------------------------------------


@pytest.fixture
def workers(tmp_path: Path, database_url: str) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    env = dict(os.environ)
    env["PERDURE_DATABASE_URL"] = database_url
    env["PERDURE_LEDGER"] = str(tmp_path / "ledger.jsonl")
    env["PERDURE_HOLD_TURN"] = "3"
    # The workers import the perdure this test imports (PYTHONPATH may be relative).
    source = str(Path(perdure.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), source, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(started) + 1}.log", "wb")  # noqa: SIM115
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "perdure", "worker", "agent_app:app"],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_sigkilled_worker_resumes_without_repeating_a_finished_model_call_or_tool_call(
    database_url: str, tmp_path: Path, workers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    client = build_app(database_url)
    try:
        first = workers()
        handle = client.start("forecast", "Umbrella in Paris?", workflow_id="kill-1")

        def turn_3_in_flight() -> bool:
            assert first.poll() is None, (tmp_path / "worker-1.log").read_text()
            return ledger_counts(ledger, "kill-1").get("turn-3") == 1

        wait_for(turn_3_in_flight, 60, "the model's third turn")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL

        workers()
        assert handle.result(timeout=90) == "".join(ANSWER)
        tokens = list(client.read_stream("kill-1", "tokens"))
    finally:
        client.shutdown()

    # Turns 1 and 2 and both tools finished before the kill: not run again. Turn 3 was in
    # flight: run again, once.
    assert ledger_counts(ledger, "kill-1") == {
        "turn-1": 1,
        "turn-2": 1,
        "turn-3": 2,
        "get_weather": 1,
        "to_fahrenheit": 1,
    }
    assert tokens == list(ANSWER)


def test_resolve_accepts_the_json_form(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[Any, ...]] = []

    class Sender:
        def send(self, workflow_id: str, message: Any, topic: str | None = None) -> None:
            sent.append((workflow_id, message, topic))

    token = _token("wf-1", "pydantic_ai/a/b/c")
    resolve(Sender(), token, {"approvals": {"x": True}})
    assert sent == [("wf-1", {"payload": {"approvals": {"x": True}}}, "pydantic_ai/a/b/c")]


def test_public_names_are_pinned_and_documented() -> None:
    assert sorted(integration.__all__) == [
        "PerdureDurability",
        "Sender",
        "StepOptions",
        "ask_via_stream",
        "fail",
        "resolve",
        "stream_text",
    ]
    for name in integration.__all__:
        assert getattr(integration, name).__doc__, name
