"""OpenTelemetry for perdure: spans, metrics and trace context (``pip install 'perdure[otel]'``).

Every OpenTelemetry import of perdure is in this module, guarded: without the package
``AVAILABLE`` is False and every function here does nothing (``observe_run`` returns
None, ``carrier`` returns None), so the core imports and runs without it. With it, the
API is imported only once it can matter: a provider is given to ``configure``, some code
of the process imported OpenTelemetry (no span can be current and no global provider set
before), or the environment names a provider (``OTEL_PYTHON_TRACER_PROVIDER``...).

perdure uses the providers given to ``configure``, or else the global ones
(``opentelemetry.trace.set_tracer_provider`` ...), looked up when an execution begins
and when a workflow is started or finished. A global provider, once set, is kept (it
can only be set once); one not set yet is looked up again at most every second (a
lookup reads the environment): set them before the app runs workflows.
When neither a tracer nor a meter provider is configured, an execution gets no
``RunTelemetry`` and its steps pay one attribute test for telemetry; with one, they pay
for what is configured only (a span, or a histogram record, per attempt).

Spans (attributes ``perdure.workflow.id``, ``perdure.workflow.name`` on each):

- ``workflow <name>``: one per *execution* of a workflow (the first run, each run after
  a crash, a takeover, a suspension or a continue-as-new), with ``perdure.executor.id``
  and ``perdure.workflow.outcome`` (the outcome's state, or the signal that ended the
  execution: ``Suspended``, ``LeaseLost``, ``ContinueAsNew``, ``NonDeterminismError``...).
  Its parent is the trace context stored when the workflow was started (``carrier``),
  so every execution on every executor is in the starter's trace. Without a stored
  context, the parent is a context derived from the workflow's ID and creation time:
  its executions still share one trace ID (a root that is never exported).
- ``step <name>``: one per step *attempt*, child of the execution's span and current
  while the step's body runs, with ``perdure.step.name``, ``perdure.step.position``,
  ``perdure.step.attempt`` and ``perdure.step.outcome`` (succeeded, failed, interrupted).
- ``recv <topic>``: a message taken by ``perdure.recv`` (``perdure.child_result`` for a
  child's outcome), with a *link* to the context of the code that sent it.

Metrics: ``perdure.workflows.started`` and ``perdure.workflows.finished`` (counters by
workflow name, and status), ``perdure.step.duration`` (a histogram of attempts, in
seconds, by workflow, step and outcome), ``perdure.step.retries`` (counter),
``perdure.workflows.suspended`` and ``perdure.breaker.state`` (observable gauges read
from the stores that ``watch`` registered, each at most every few seconds).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation


class _Api:
    """The OpenTelemetry API, imported on first need (``_load``): its import is a tenth of
    a worker's start-up, and most processes never trace."""

    def __init__(self) -> None:
        from opentelemetry import context, metrics, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.context = context
        self.metrics = metrics
        self.trace = trace
        # Only the W3C trace context is stored, never baggage (which may hold anything).
        self.propagator = TraceContextTextMapPropagator()


def _installed() -> bool:
    try:  # finds the package without importing it (a blocked import raises)
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


#: Whether the OpenTelemetry API (``perdure[otel]``) is installed.
AVAILABLE = _installed()
_api: _Api | None = None
#: Environment variables that make OpenTelemetry load a global provider by itself.
_ENV_PROVIDERS = ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER")


def _load() -> _Api | None:
    """The API, imported now if it is not yet; None without the package."""
    global _api
    if _api is None and AVAILABLE:
        try:
            _api = _Api()
        except ImportError:  # installed but broken: the same as not installed
            return None
    return _api


def _in_use(providers: bool = False) -> _Api | None:
    """The API if some code of this process may be using OpenTelemetry, else None,
    importing nothing: without its trace API imported no span can be current; without its
    trace or metrics API no global provider can have been set, unless (``providers``)
    the environment names one for OpenTelemetry to load."""
    if _api is not None:
        return _api
    modules = sys.modules  # tested at every start of a workflow: two dict lookups
    if modules.get("opentelemetry.trace") is not None:
        return _load()
    if providers and (
        modules.get("opentelemetry.metrics") is not None
        or any(name in os.environ for name in _ENV_PROVIDERS)
    ):
        return _load()
    return None


def _the_api() -> _Api:
    """The API, for code that runs only with a tracer or instruments (so it is loaded)."""
    api = _api
    assert api is not None, "OpenTelemetry used before it was loaded"
    return api


def _attach(span: Any) -> Any:
    """Make ``span`` current in this context; the token to detach it."""
    api = _the_api()
    return api.context.attach(api.trace.set_span_in_context(span))


def _error_status(why: str) -> Any:
    trace = _the_api().trace
    return trace.Status(trace.StatusCode.ERROR, why)


SCOPE = "perdure"
#: Bucket boundaries (seconds) of the step duration histogram: from a millisecond step
#: to a five-minute one.
DURATION_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
BREAKER_STATES = ("CLOSED", "OPEN", "HALF_OPEN")

WORKFLOW_ID = "perdure.workflow.id"
WORKFLOW_NAME = "perdure.workflow.name"


#: What a gauge source reads: suspended workflows by name, (name, state) of each breaker.
Reading = tuple[dict[str, int], list[tuple[str, str]]]


class GaugeSource(Protocol):
    """What the observable gauges read: one database's suspended workflows and breakers
    (``_gauges.StoreGauges`` reads them at most every few seconds)."""

    @property
    def key(self) -> str:
        """The database: sources with the same key are counted once."""
        ...

    def reading(self) -> Reading | None:
        """The database's numbers, or None when it cannot be read now."""
        ...


class Instruments:
    """perdure's metric instruments on one meter."""

    def __init__(self, meter: Any) -> None:
        self.started = meter.create_counter(
            "perdure.workflows.started", "{workflow}", "Workflows started (created)."
        )
        self.finished = meter.create_counter(
            "perdure.workflows.finished", "{workflow}", "Workflows whose outcome was recorded."
        )
        self.step_duration = meter.create_histogram(
            "perdure.step.duration",
            "s",
            "Duration of step attempts.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.retries = meter.create_counter(
            "perdure.step.retries", "{retry}", "Failed step attempts that get another attempt."
        )
        meter.create_observable_gauge(
            "perdure.workflows.suspended",
            [_observe_suspended],
            "{workflow}",
            "Workflows suspended now (waiting for a time, a message, a child, a retry).",
        )
        meter.create_observable_gauge(
            "perdure.breaker.state",
            [_observe_breakers],
            "1",
            "1 for the state each circuit breaker is in, 0 for the others.",
        )


class _Providers:
    """The providers given to ``configure`` and what was made of them, each pair set
    with one assignment (so a reader in another thread never sees half of it)."""

    def __init__(self) -> None:
        self.tracer_provider: Any = None
        self.meter_provider: Any = None
        self.tracing: tuple[Any, Any] = (None, None)
        self.metering: tuple[Any, Instruments | None] = (None, None)


class _Globals:
    """The global providers as last looked up: each is kept once set (OpenTelemetry
    sets a global provider once), and looked up again while unset (None) from
    ``look_at`` (``time.monotonic``) on: ``RECHECK_SECONDS`` after the last lookup,
    never once both are set."""

    def __init__(self) -> None:
        self.tracer_provider: Any = None
        self.meter_provider: Any = None
        self.look_at = float("-inf")


#: How often a global provider that is not set yet is looked up again (seconds).
RECHECK_SECONDS = 1.0

_providers = _Providers()
_globals = _Globals()
_lock = threading.Lock()
_sources: weakref.WeakSet[GaugeSource] = weakref.WeakSet()


def configure(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Use these providers (None: the global ones) from the next execution on."""
    with _lock:
        _providers.tracer_provider = tracer_provider
        _providers.meter_provider = meter_provider
        _providers.tracing = (None, None)
        _providers.metering = (None, None)
        _globals.look_at = float("-inf")


def use_meter_provider(provider: Any) -> None:
    """Use ``provider`` for metrics from now on (the tracer provider stays)."""
    with _lock:
        _providers.meter_provider = provider
        _providers.metering = (None, None)
        _globals.look_at = float("-inf")


def _look_up_globals() -> None:
    """Look up the global providers that are not set yet (called once ``look_at`` is
    past: each lookup of an unset one reads ``os.environ``, and a workflow needs
    several). Until some code imports OpenTelemetry, there is none to look up."""
    found = _globals
    api = _in_use(providers=True)
    if api is None:
        found.look_at = time.monotonic() + RECHECK_SECONDS
        return
    if found.tracer_provider is None:
        tracing = api.trace.get_tracer_provider()
        if not isinstance(tracing, api.trace.ProxyTracerProvider):
            found.tracer_provider = tracing
    if found.meter_provider is None:
        metering = api.metrics.get_meter_provider()
        # The global provider is a proxy until one is set (its class is private).
        if not type(metering).__name__.startswith("_Proxy"):
            found.meter_provider = metering
    unset = found.tracer_provider is None or found.meter_provider is None
    found.look_at = time.monotonic() + RECHECK_SECONDS if unset else float("inf")


def meter_provider() -> Any:
    """The meter provider perdure uses, or None when none is configured."""
    provider = _providers.meter_provider
    if provider is None:
        if time.monotonic() >= _globals.look_at:
            _look_up_globals()
        provider = _globals.meter_provider
    if provider is None:
        return None
    api = _load()
    # A no-op or proxy provider (given to configure) records nothing: the same as none.
    if (
        api is None
        or isinstance(provider, api.metrics.NoOpMeterProvider)
        or type(provider).__name__.startswith("_Proxy")
    ):
        return None
    return provider


def tracer() -> Any:
    """perdure's tracer, or None when no tracer provider is configured."""
    provider = _providers.tracer_provider
    if provider is None:
        if time.monotonic() >= _globals.look_at:
            _look_up_globals()
        provider = _globals.tracer_provider
    if provider is None:
        return None
    api = _load()
    if api is None or isinstance(
        provider, api.trace.ProxyTracerProvider | api.trace.NoOpTracerProvider
    ):
        return None
    made_for, made = _providers.tracing
    if made_for is not provider:
        made = provider.get_tracer(SCOPE)
        _providers.tracing = (provider, made)
    return made


def instruments() -> Instruments | None:
    """perdure's instruments, or None when no meter provider is configured."""
    provider = meter_provider()
    if provider is None:
        return None
    made_for, made = _providers.metering
    if made_for is not provider:
        with _lock:  # instruments are registered once per provider
            made_for, made = _providers.metering
            if made_for is not provider:
                made = Instruments(provider.get_meter(SCOPE))
                _providers.metering = (provider, made)
    return made


# -- trace context ------------------------------------------------------------------------


def carrier() -> str | None:
    """The current trace context as stored with a workflow or a message (JSON of the W3C
    ``traceparent`` and ``tracestate``), or None when no span is current."""
    api = _in_use()
    if api is None or not api.trace.get_current_span().get_span_context().is_valid:
        return None
    fields: dict[str, str] = {}
    api.propagator.inject(fields)
    return json.dumps(fields, sort_keys=True)


def _span_context(stored: str | None) -> Any:
    """The span context a stored carrier holds, or None (none, or unreadable)."""
    api = _load()
    if not stored or api is None:
        return None
    try:
        fields = json.loads(stored)
        if not isinstance(fields, dict):
            return None
        found = api.trace.get_current_span(api.propagator.extract(fields)).get_span_context()
    except (ValueError, TypeError):  # not what perdure stored: start afresh, run anyway
        return None
    return found if found.is_valid else None


def _parent(stored: str | None, workflow_id: str, created_at: float) -> Any:
    """The context every execution of a workflow continues: the stored one, else one
    derived from the workflow (the same in every process)."""
    trace = _the_api().trace
    span_context = _span_context(stored)
    if span_context is None:
        seed = f"{workflow_id}\0{created_at!r}".encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(seed).digest()
        span_context = trace.SpanContext(
            int.from_bytes(digest[:16], "big") or 1,
            int.from_bytes(digest[16:24], "big") or 1,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
    empty = _the_api().context.Context()
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context), empty)


def current_ids() -> tuple[str, str] | None:
    """(trace ID, span ID) in hex of the current span, for log records; None without."""
    api = _in_use()
    if api is None:
        return None
    span_context = api.trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


# -- one execution --------------------------------------------------------------------------


class RunTelemetry:
    """The telemetry of one execution of one workflow: its span (current in the
    execution's context from creation to ``close``) and its instruments."""

    __slots__ = ("attributes", "instruments", "name", "span", "token", "tracer")

    def __init__(
        self,
        tracer: Any,
        instruments: Instruments | None,
        workflow_id: str,
        name: str,
        executor: str,
        stored: str | None,
        created_at: float,
    ) -> None:
        self.tracer = tracer
        self.instruments = instruments
        self.name = name
        self.attributes = {WORKFLOW_ID: workflow_id, WORKFLOW_NAME: name}
        self.span: Any = None
        self.token: Any = None
        if tracer is not None:
            self.span = tracer.start_span(
                f"workflow {name}",
                context=_parent(stored, workflow_id, created_at),
                attributes={**self.attributes, "perdure.executor.id": executor},
            )
            self.token = _attach(self.span)

    def close(self, outcome: str, failed: bool = False, error: BaseException | None = None) -> None:
        """End the execution's span: ``outcome`` is the state recorded or the signal
        that ended it; ``failed`` for a FAILED outcome, ``error`` what the workflow
        raised."""
        span = self.span
        if span is None:
            return
        span.set_attribute("perdure.workflow.outcome", outcome)
        if error is not None:
            span.record_exception(error)
        if failed:
            why = "the workflow failed" if error is None else f"{type(error).__name__}: {error}"
            span.set_status(_error_status(why))
        _the_api().context.detach(self.token)
        span.end()

    def attempt(self, step: str, position: str, attempt: int) -> AttemptTelemetry:
        """The telemetry of one attempt of a step, begun now."""
        return AttemptTelemetry(self, step, position, attempt)

    def retried(self, step: str) -> None:
        """A failed attempt of ``step`` gets another one."""
        if self.instruments is not None:
            self.instruments.retries.add(1, {WORKFLOW_NAME: self.name, "perdure.step.name": step})

    def received(self, name: str, topic: str, position: str, sent_from: str | None) -> None:
        """A message on ``topic`` was taken at ``position``: a span ``name`` linked to the
        sender's context."""
        if self.tracer is None:
            return
        sender = _span_context(sent_from)
        span = self.tracer.start_span(
            name,
            attributes={
                **self.attributes,
                "perdure.message.topic": topic,
                "perdure.step.position": position,
            },
            links=[] if sender is None else [_the_api().trace.Link(sender)],
        )
        span.end()


class AttemptTelemetry:
    """One step attempt's span (current while the body runs) and duration."""

    __slots__ = ("run", "span", "started", "step", "token")

    def __init__(self, run: RunTelemetry, step: str, position: str, attempt: int) -> None:
        self.run = run
        self.step = step
        self.span: Any = None
        self.token: Any = None
        if run.tracer is not None:
            self.span = run.tracer.start_span(
                f"step {step}",
                attributes={
                    **run.attributes,
                    "perdure.step.name": step,
                    "perdure.step.position": position,
                    "perdure.step.attempt": attempt,
                },
            )
            self.token = _attach(self.span)
        self.started = time.perf_counter()

    def end(self, error: BaseException | None, interrupted: bool = False) -> None:
        """The attempt returned, failed with ``error``, or was interrupted (a cancel, the
        deadline, a lost lease)."""
        elapsed = time.perf_counter() - self.started
        outcome = "interrupted" if interrupted else "failed" if error is not None else "succeeded"
        run = self.run
        if run.instruments is not None:
            attributes = {WORKFLOW_NAME: run.name, "perdure.step.name": self.step}
            attributes["perdure.step.outcome"] = outcome
            run.instruments.step_duration.record(elapsed, attributes)
        span = self.span
        if span is None:
            return
        span.set_attribute("perdure.step.outcome", outcome)
        if error is not None:
            span.record_exception(error)
            span.set_status(_error_status(f"{type(error).__name__}: {error}"))
        _the_api().context.detach(self.token)
        span.end()


def observe_run(
    workflow_id: str, name: str, executor: str, stored: str | None, created_at: float
) -> RunTelemetry | None:
    """The telemetry of an execution beginning now in this context, or None when
    neither tracing nor metrics are configured."""
    found_tracer, found_instruments = tracer(), instruments()
    if found_tracer is None and found_instruments is None:
        return None
    return RunTelemetry(
        found_tracer, found_instruments, workflow_id, name, executor, stored, created_at
    )


# -- counters outside an execution ------------------------------------------------------------


def started(name: str) -> None:
    """A workflow named ``name`` was created."""
    found = instruments()
    if found is not None:
        found.started.add(1, {WORKFLOW_NAME: name})


def finished(name: str, status: str) -> None:
    """The outcome ``status`` of a workflow named ``name`` was recorded."""
    found = instruments()
    if found is not None:
        found.finished.add(1, {WORKFLOW_NAME: name, "perdure.workflow.status": status})


# -- observable gauges ------------------------------------------------------------------------


def watch(source: GaugeSource) -> None:
    """Report ``source``'s suspended workflows and breakers (until it is garbage or
    ``unwatch``\\ ed)."""
    with _lock:
        _sources.add(source)


def unwatch(source: GaugeSource) -> None:
    """Stop reporting ``source``."""
    with _lock:
        _sources.discard(source)


def _readings() -> list[Reading]:
    """One reading per database watched (the first source of it that can be read)."""
    with _lock:
        sources = list(_sources)
    found: dict[str, Reading] = {}
    for source in sources:
        if source.key not in found:
            reading = source.reading()
            if reading is not None:
                found[source.key] = reading
    return list(found.values())


def _observe_suspended(options: CallbackOptions) -> Iterator[Observation]:
    totals: dict[str, int] = {}
    for suspended, _ in _readings():
        for name, count in suspended.items():
            totals[name] = totals.get(name, 0) + count
    for name, count in sorted(totals.items()):
        yield _the_api().metrics.Observation(count, {WORKFLOW_NAME: name})


def _observe_breakers(options: CallbackOptions) -> Iterator[Observation]:
    for _, breakers in _readings():
        for name, state in breakers:
            for each in BREAKER_STATES:
                attributes = {"perdure.breaker": name, "perdure.breaker.state": each}
                yield _the_api().metrics.Observation(1 if state == each else 0, attributes)
