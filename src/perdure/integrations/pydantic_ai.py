"""Durable Pydantic AI agents: every model request and every tool call is a perdure step.

Attach ``PerdureDurability()`` to an agent and call ``agent.run()`` inside an ``async``
perdure workflow::

    agent = Agent(model, name="support", capabilities=[PerdureDurability()])

    @app.workflow
    async def answer(question: str) -> str:
        return (await agent.run(question)).output

The agent's run loop is then the workflow: each model request and each tool call runs
as a step named after the agent (``support__model.request_stream``,
``support__function_toolset__<id>.call_tool:<tool>``), its result recorded; after a
crash the workflow replays, every finished request and tool call returns its record
without running again, and only the one in flight runs again. Outside a workflow the
capability changes nothing.

It is built on Pydantic AI's public engine interface (``pydantic_ai.durable_exec``), the
one its own Temporal, DBOS and Prefect integrations use: a ``BaseDurabilityCapability``
whose ``CallableOperationBackend`` runs each operation's body as a step, with the JSON
codec (perdure records JSON), and an ``ExternalEventWaiter`` for human input:

- **Streaming.** ``PerdureDurability(stream="tokens")`` writes the text of the model's
  answer, delta by delta, to the workflow's perdure stream ``"tokens"`` while the request
  runs; read it with ``app.read_stream(workflow_id, "tokens")``. The deltas are written
  from inside the request's step, so they are *at least once*: a request cut off by a
  crash streams again from its start when it runs again (each entry names the attempt
  that wrote it). Any ``event_stream_handler`` of your own works as in Pydantic AI.
- **Approval.** A tool declared with ``requires_approval=True`` is deferred by Pydantic
  AI; with its ``RequestInput`` capability on the agent, the run asks for a decision and
  waits for it with ``perdure.recv``: the workflow is suspended (no thread held) until a
  decision arrives or the timeout passes (every pending call is then denied). ``ask``
  runs once, as a step, with a *token*; ``ask_via_stream(key)`` is an ``ask`` that
  publishes the token and the pending calls on a perdure stream. Answer with
  ``resolve(app, token, DeferredToolResults(...))`` (or ``fail(app, token, reason)``):
  an ``app.send`` to the waiting workflow, from any process.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypedDict, cast

from pydantic import JsonValue, TypeAdapter

try:
    import pydantic_ai  # noqa: F401 - say what to install, not just what is missing
except ImportError as exc:  # pragma: no cover - the extra installs it
    raise ImportError(
        "perdure.integrations.pydantic_ai needs Pydantic AI: "
        "pip install 'perdure[pydantic-ai]' (Python 3.11 or later)"
    ) from exc

from pydantic_ai import DeferredToolRequests, DeferredToolResults, RunContext
from pydantic_ai.agent import AbstractAgent, EventStreamHandler
from pydantic_ai.capabilities.abstract import WrapRunHandler
from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    DurabilityEngineSpec,
    DurableOperationBackend,
    DurableOperationId,
    ExternalEventError,
    ExternalEventWaiter,
    JournalCallableOperationBackend,
    RoleBasedOperationConfig,
    conversation_id_from_run_id,
    external_event_scope,
)
from pydantic_ai.messages import (
    AgentStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import AgentDepsT

from .._engine.inside import current_step
from .._engine.messages import recv_async
from .._engine.state import RunState, current_run
from .._engine.steps import call_step_async
from .._engine.streams import write_stream_async
from .._engine.values import now, uuid4
from .._errors import Cancelled, ConfigurationError
from .._registry import StepDef
from .._retry import NO_RETRY, Retry
from .._validation import check_key, optional_positive_seconds

__all__ = [
    "PerdureDurability",
    "Sender",
    "StepOptions",
    "ask_via_stream",
    "fail",
    "resolve",
    "stream_text",
]


class StepOptions(TypedDict, total=False):
    """How the steps of one kind of operation run: ``retry`` (a ``perdure.Retry``; default:
    none) and ``timeout`` (seconds one attempt may take; default: none)."""

    retry: Retry
    timeout: float


# -- running an operation as a step ------------------------------------------------------


async def _unit(body: Callable[[], Awaitable[object]]) -> Any:
    """The function of every step this integration runs: Pydantic AI's encoded body (its
    result is already JSON, which perdure records)."""
    return await body()


def _options(options: object, what: str) -> StepOptions:
    """``options`` checked: a mapping with at most ``retry`` (a ``Retry``) and ``timeout``
    (seconds above 0); ``ConfigurationError`` naming ``what`` otherwise."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not set(options) <= {"retry", "timeout"}:
        raise ConfigurationError(
            f"{what} must be a dict with at most 'retry' (a perdure.Retry) and 'timeout' "
            f"(seconds), not {options!r:.200}"
        )
    checked: StepOptions = {}
    retry = options.get("retry")
    if retry is not None:
        if not isinstance(retry, Retry):
            raise ConfigurationError(f"the 'retry' of {what} must be a perdure.Retry: {retry!r}")
        checked["retry"] = retry
    timeout = optional_positive_seconds(f"the 'timeout' of {what}", options.get("timeout"))
    if timeout is not None:
        checked["timeout"] = timeout
    return checked


class _Steps:
    """Step definitions by name and options, made once: a definition is a name, a retry
    policy and a timeout around ``_unit``."""

    def __init__(self) -> None:
        self._defs: dict[tuple[str, int, float | None], StepDef] = {}

    def definition(self, name: str, options: StepOptions) -> StepDef:
        retry = options.get("retry", NO_RETRY)
        timeout = options.get("timeout")
        key = (name, id(retry), timeout)
        found = self._defs.get(key)
        if found is None:
            found = StepDef(name, _unit, True, retry, timeout)
            self._defs[key] = found
        return found

    async def run(
        self, run: RunState, name: str, body: Callable[[], Awaitable[object]], options: StepOptions
    ) -> object:
        """``body`` as the step ``name`` at the run's next position (its record on replay)."""
        definition = self.definition(name, options)
        result: object = await call_step_async(run, definition, (body,), {})
        return result


def _workflow_run(engine: str) -> RunState | None:
    """The async workflow running this code, None outside any (or in a step's body)."""
    run = current_run.get()
    if run is not None and not run.definition.is_async:
        raise ConfigurationError(
            f"a Pydantic AI agent with {engine} was run in workflow {run.workflow_id!r}, "
            f"which is synchronous ({run.definition.name!r}): its model requests and tool "
            "calls are async steps, so run the agent in an `async def` workflow with "
            "`await agent.run(...)`"
        )
    return run


class _Backend(JournalCallableOperationBackend[StepOptions]):
    """Runs each durable operation of the agent (a model request, a tool call, ...) as one
    perdure step named by Pydantic AI's journal convention."""

    def __init__(self, agent_name: str, config: RoleBasedOperationConfig[StepOptions]) -> None:
        super().__init__(agent_name=agent_name, config=config)
        self.steps = _Steps()

    async def execute(
        self,
        *,
        operation_id: DurableOperationId,
        name: str,
        body: Callable[[], Awaitable[object]],
        cache_key: tuple[object, ...],
        config: StepOptions,
    ) -> object:
        run = _workflow_run(PerdureDurability.engine_spec.engine_name)
        if run is None:
            # Outside a workflow (or nested inside a step), the agent is a plain agent.
            return await body()
        return await self.steps.run(run, name, body, config or {})


# -- waiting for a decision --------------------------------------------------------------

_TOKEN_PREFIX = "perdure1."


def _token(workflow_id: str, topic: str) -> str:
    raw = json.dumps([workflow_id, topic], ensure_ascii=False).encode()
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_token(token: str) -> tuple[str, str]:
    """The workflow ID and topic a token names; ``ValueError`` for anything else."""
    if not isinstance(token, str) or not token.startswith(_TOKEN_PREFIX):
        raise ValueError(f"not a perdure resume token: {token!r:.80}")
    encoded = token[len(_TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        workflow_id, topic = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"not a perdure resume token: {token!r:.80}") from exc
    if not isinstance(workflow_id, str) or not isinstance(topic, str):
        raise ValueError(f"not a perdure resume token: {token!r:.80}")
    return workflow_id, topic


class _Waiter(ExternalEventWaiter):
    """A wait for an external event inside a workflow: ``ask`` once as a step, then
    ``perdure.recv`` on a topic of its own, which suspends the workflow while it waits."""

    def __init__(self, agent_name: str, steps: _Steps, run: RunState) -> None:
        self.agent_name = agent_name
        self.steps = steps
        self.run = run

    async def wait(
        self,
        name: str,
        *,
        ask: Callable[[str], Awaitable[JsonValue]],
        timeout: timedelta | None,
    ) -> JsonValue:
        # A recorded UUID: the same topic (so the same token) on every replay.
        topic = f"pydantic_ai/{self.agent_name}/{name}/{uuid4().hex}"
        token = _token(self.run.workflow_id, topic)

        async def asking() -> object:
            return await ask(token)

        step = f"{self.agent_name}__external_event.{name}.ask"
        answer = await self.steps.run(self.run, step, asking, {})
        if answer is not None:
            return answer  # type: ignore[return-value]  # ask's JSON, as recorded
        message = await recv_async(topic, timeout=timeout)
        if message is None:
            raise ExternalEventError(f"no decision arrived within {timeout}")
        if not isinstance(message, dict) or not ({"payload", "error"} & message.keys()):
            raise ExternalEventError(
                f"the decision sent is not one of resolve() or fail(): {message!r:.200}"
            )
        if "error" in message:
            raise ExternalEventError(str(message["error"]))
        payload: JsonValue = message["payload"]
        return payload


class Sender(Protocol):
    """What ``resolve`` and ``fail`` need: a ``perdure.App`` (its ``send``)."""

    def send(self, workflow_id: str, message: Any, topic: str | None = None) -> None: ...


def resolve(app: Sender, token: str, payload: object) -> None:
    """Answer the wait that handed out ``token`` (``RequestInput``'s ``ask``) with
    ``payload``: for an approval, a ``DeferredToolResults`` (or its JSON form). It is an
    ``app.send`` to the waiting workflow: durable when this returns, from any process
    with the app; the workflow wakes and goes on. ``ValueError`` for a token that is not
    one of perdure's; ``WorkflowNotFoundError``/``WorkflowFinishedError`` as ``app.send``."""
    workflow_id, topic = _parse_token(token)
    if isinstance(payload, DeferredToolResults):
        payload = _RESULTS.dump_python(payload, mode="json")
    app.send(workflow_id, {"payload": payload}, topic=topic)


def fail(app: Sender, token: str, reason: str) -> None:
    """End the wait that handed out ``token`` without an answer: ``RequestInput`` denies
    every pending call with ``reason`` in its message to the model."""
    workflow_id, topic = _parse_token(token)
    app.send(workflow_id, {"error": str(reason)}, topic=topic)


_RESULTS = TypeAdapter(DeferredToolResults)


def ask_via_stream(
    key: str = "requests",
) -> Callable[[RunContext[Any], DeferredToolRequests, str], Awaitable[None]]:
    """An ``ask`` for ``RequestInput``: publishes each wait on the workflow's perdure stream
    ``key`` as ``{"token", "approvals": [{"tool_call_id", "tool_name", "args"}], "calls":
    [...]}`` and waits for ``resolve(app, token, ...)``. Read it with
    ``app.read_stream(workflow_id, key)``."""
    key = check_key("stream key", key)

    async def ask(ctx: RunContext[Any], requests: DeferredToolRequests, token: str) -> None:
        if current_step.get() is None:
            raise ConfigurationError(
                f"ask_via_stream({key!r}) publishes to the stream of the workflow that runs "
                "the agent, but this run is not in a workflow: run it in one, or give "
                "RequestInput an ask of your own"
            )

        def described(calls: list[Any]) -> list[dict[str, Any]]:
            return [
                {"tool_call_id": c.tool_call_id, "tool_name": c.tool_name, "args": c.args_as_dict()}
                for c in calls
            ]

        request = {
            "token": token,
            "approvals": described(requests.approvals),
            "calls": described(requests.calls),
        }
        await write_stream_async(key, request)

    return ask


# -- streaming ---------------------------------------------------------------------------


def stream_text(key: str) -> EventStreamHandler[Any]:
    """An ``event_stream_handler`` that writes the text of the model's answers, delta by
    delta, to the workflow's perdure stream ``key`` (at least once: see the module)."""
    key = check_key("stream key", key)

    async def handler(ctx: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
        async for event in events:
            text = None
            if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                text = event.part.content
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                text = event.delta.content_delta
            if text and current_step.get() is not None:
                # Inside the request's step: readers see it while the model answers.
                # (Outside a workflow the agent is a plain agent: nothing to write to.)
                await write_stream_async(key, text)

    return handler


# -- the capability ----------------------------------------------------------------------


@dataclass(init=False, kw_only=True)
class PerdureDurability(BaseDurabilityCapability[AgentDepsT]):
    """Makes a Pydantic AI agent durable in perdure workflows: each model request and each
    tool call is a step; a wait for input (``RequestInput``) is a ``perdure.recv``.

    Call ``await agent.run(...)`` in an ``async`` workflow; outside one the agent is
    unchanged. See the module for streaming and approvals.
    """

    engine_spec = DurabilityEngineSpec(
        engine_name="perdure",
        durable_unit_noun="step",
        durable_unit_plural="steps",
        durable_container_noun="workflow",
        # perdure records JSON: values cross as their JSON form, rebuilt by Pydantic AI.
        codec=JSON_CODEC,
        unsupported_runtime_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        toolset_lifecycles={
            "function": "enter-always",
            "mcp": "enter-in-durable-unit",
            "dynamic": "enter-never",
        },
        journal_discovery=True,
        # Tasks a workflow creates get replay-stable positions of their own, so tool
        # calls may run concurrently.
        sequential_tools_in_durable_context=False,
        tool_config_key="perdure",
        cancellation_error_types=(Cancelled,),
    )

    def __init__(
        self,
        *,
        name: str | None = None,
        models: Mapping[str, Model] | None = None,
        stream: str | None = None,
        event_stream_handler: EventStreamHandler[AgentDepsT] | None = None,
        model_step: StepOptions | None = None,
        tool_step: StepOptions | None = None,
    ) -> None:
        """``name``: the agent's name in its steps' names (default: the agent's ``name``).
        ``models``: other models a run may pick (``agent.run(model=...)``), by a key that
        names their steps; model-name strings need no registering.
        ``stream``: a perdure stream key to write the answer's text to (``stream_text``);
        or your own ``event_stream_handler``, not both. ``model_step`` and
        ``tool_step``: how model-request and tool-call steps run (``StepOptions``); a
        tool's ``metadata={"perdure": {...}}`` overrides ``tool_step`` for that tool."""
        if stream is not None and event_stream_handler is not None:
            raise ConfigurationError(
                "PerdureDurability takes stream= or event_stream_handler=, not both: "
                "call stream_text(key) from your handler to do both"
            )
        handler = stream_text(stream) if stream is not None else event_stream_handler
        super().__init__(models=models, event_stream_handler=handler, name=name)
        self._model_step = _options(model_step, "PerdureDurability(model_step=...)")
        self._tool_step = _options(tool_step, "PerdureDurability(tool_step=...)")
        self._backend: _Backend | None = None

    def _bind_to_agent(self, agent: Any) -> None:
        resolve = self._build_resolve_tool_config(self._tool_step)

        def tool_options(
            operation_id: DurableOperationId, tool: object | None, tool_name: str
        ) -> StepOptions | Literal[False]:
            # tool_step, overridden by the tool's metadata={"perdure": {...}} (False: the
            # tool runs in the workflow itself, not as a step).
            return cast("StepOptions | Literal[False]", resolve(tool, tool_name))  # type: ignore[arg-type]

        self._backend = _Backend(
            self.name,
            RoleBasedOperationConfig(
                model=self._model_step,
                event={},
                capability={},
                tool=self._tool_step,
                resolve_tool=tool_options,
            ),
        )
        super()._bind_to_agent(agent)

    @property
    def in_durable_context(self) -> bool:
        return _workflow_run(self.engine_name) is not None

    def get_durable_operation_backend(self) -> DurableOperationBackend[StepOptions]:
        assert self._backend is not None, "bound by Agent(capabilities=[...])"
        return self._backend

    def _toolset_base_config(self, kind: Any) -> Any:
        return self._tool_step

    def _normalize_unit_config(self, config: Any) -> Any:
        # A tool's metadata={"perdure": {...}}, merged with tool_step by Pydantic AI.
        return _options(config, "a tool's perdure step options")

    def get_default_run_id(self) -> str | None:
        run = _workflow_run(self.engine_name)
        if run is None:
            return None
        # Recorded: a replay gives the agent run the same ID.
        return f"{run.workflow_id}:{uuid4().hex}"

    def get_default_conversation_id(self, run_id: str) -> str | None:
        return conversation_id_from_run_id(run_id) if self.in_durable_context else None

    async def get_run_start_time(self, run_id: str) -> datetime | None:
        if not self.in_durable_context:
            return None
        # Recorded: a resumed run counts its timeout from when it first started.
        return now()

    async def wrap_run(
        self, ctx: RunContext[AgentDepsT], *, handler: WrapRunHandler
    ) -> AgentRunResult[Any]:
        run = _workflow_run(self.engine_name)
        if run is None or self._backend is None:
            return await super().wrap_run(ctx, handler=handler)
        with (
            external_event_scope(_Waiter(self.name, self._backend.steps, run)),
            # Parallel tool calls, their events in call order rather than completion
            # order: a replay, whose calls return their records at once, sees the same.
            AbstractAgent.parallel_tool_call_execution_mode("parallel_ordered_events"),
        ):
            return await super().wrap_run(ctx, handler=handler)
