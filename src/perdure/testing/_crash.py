"""Crash injection: run a workflow once per crash point, crashing its executor there.

A *crash point* is a moment right after the workflow made something durable: a step's
record (its result, its failure, a retry's wait), a recorded value (``now()``, a
sleep's wake time), a wait's record (``recv``'s deadline, a received message), an
event, or the claim that wakes it after a wait. ``crash_points`` lists them from an
uninterrupted run; ``assert_survives_crashes`` then runs the workflow once per point
and, at that point, crashes the executor the way a killed process would:

1. the write's commit is not handed back to the workflow until the crash is done;
2. the executor stops (no heartbeat, no claim), its runs are released (the next step
   or wait raises ``LeaseLost``: nothing more runs) and its leases dropped in the
   database, so that every later write of the crashed run is refused by the store's
   fencing, as a dead process's would be: nothing more is recorded;
3. a new executor starts (``app.shutdown()`` then ``app.launch()``: another worker),
   claims the workflow and replays it from the database.

Each run must end as the uninterrupted one did (the same state, the same result or
the same error type and message), and every step's function must have run exactly as
often as its records count attempts: a step that completed before the crash does not
run again.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from .._app import App
from .._engine.scope import current_workflow_id
from .._error_codec import decode_error
from .._errors import WorkflowFailedError
from .._model import Outcome, StepState, WorkflowState
from .._options import StartOptions
from .._registry import StepDef
from ..storage import Lease, StepRecord, Store, WorkflowRecord

#: Real seconds to wait for a crash point, a crashed run to unwind, or an outcome.
_WAIT = 60.0


@dataclasses.dataclass(frozen=True)
class CrashPoint:
    """One moment a crash is injected at: the ``index``-th durable write of the run
    (1-based), what it recorded (``kind``: ``step``, ``message``, ``event`` or
    ``wake``) and at which position, under which name."""

    index: int
    kind: str
    position: str | None
    name: str | None

    def __str__(self) -> str:
        if self.kind == "wake":
            return f"#{self.index}: as it woke (claimed, before replaying)"
        return f"#{self.index}: after {self.kind} {self.name!r} at position {self.position}"


class _Watch:
    """The app's store, watched for the writes of one workflow: counts them and crashes
    the executor after the ``crash_at``-th."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.workflow_id: str | None = None
        self.crash_at: int | None = None
        self.points: list[CrashPoint] = []
        self.crashed = threading.Event()
        self._lock = threading.Lock()

    def arm(self, workflow_id: str, crash_at: int | None) -> None:
        with self._lock:
            self.workflow_id, self.crash_at = workflow_id, crash_at
            self.points = []
            self.crashed.clear()

    def install(self, store: Store) -> None:
        """Watch this store's writes (set on the instance: the executor, its runs and the
        client share it)."""
        if getattr(store, "_perdure_watch", None) is self:
            return
        store._perdure_watch = self  # type: ignore[attr-defined]
        record_step, consume, set_event = store.record_step, store.consume_message, store.set_event
        claim, complete = store.claim_workflows, store.complete_workflow

        def watched_record(workflow_id: str, lease: Lease, step: StepRecord) -> Future[bool]:
            future = record_step(workflow_id, lease, step)
            if workflow_id != self.workflow_id:
                return future
            return self._after(future, bool, "step", step)

        def watched_consume(
            workflow_id: str, lease: Lease, topic: str, step: StepRecord, now: float
        ) -> Future[tuple[bool, str | None, str | None]]:
            future = consume(workflow_id, lease, topic, step, now)
            if workflow_id != self.workflow_id:
                return future
            return self._after(future, lambda got: got[0] and got[1] is not None, "message", step)

        def watched_event(
            workflow_id: str, lease: Lease, step: StepRecord, key: str
        ) -> Future[bool]:
            future = set_event(workflow_id, lease, step, key)
            if workflow_id != self.workflow_id:
                return future
            return self._after(future, bool, "event", step)

        def watched_complete(*args: Any, **kwargs: Any) -> Future[bool]:
            # The run's last step records go with its outcome (held until it): each is a
            # point, as when it was a write of its own, counted before the write (a waiter
            # may see the outcome before the write's future resolves); a crash there finds
            # the workflow done.
            steps = kwargs.get("steps", ())
            due = args[0] == self.workflow_id and any([self._count("step", s) for s in steps])
            future = complete(*args, **kwargs)
            if due:
                future.add_done_callback(lambda _: self._crash_soon())
            return future

        def watched_claim(*args: Any, **kwargs: Any) -> list[WorkflowRecord]:
            claimed = claim(*args, **kwargs)
            for record in claimed:
                # Epoch 1 is a first run; later claims wake or recover it.
                if record.id == self.workflow_id and record.epoch > 1 and self._count("wake"):
                    self._crash_soon()
                    return [other for other in claimed if other.id != record.id]
            return claimed

        store.record_step = watched_record  # type: ignore[method-assign]
        store.consume_message = watched_consume  # type: ignore[method-assign]
        store.set_event = watched_event  # type: ignore[method-assign]
        store.claim_workflows = watched_claim  # type: ignore[method-assign]
        store.complete_workflow = watched_complete  # type: ignore[method-assign]

    def _count(self, kind: str, step: StepRecord | None = None) -> bool:
        """Count a durable write; whether the crash is due after it."""
        with self._lock:
            if self.crashed.is_set():
                return False
            position, name = (step.position, step.name) if step else (None, None)
            self.points.append(CrashPoint(len(self.points) + 1, kind, position, name))
            return len(self.points) == self.crash_at

    def _after(
        self, future: Future[Any], accepted: Callable[[Any], bool], kind: str, step: StepRecord
    ) -> Future[Any]:
        outer: Future[Any] = Future()

        def settle(done: Future[Any]) -> None:
            try:
                value = done.result()
            except BaseException as exc:  # noqa: BLE001 - handed on as it came
                outer.set_exception(exc)
                return
            if accepted(value) and self._count(kind, step):
                self._crash()
            outer.set_result(value)

        # Settled in a thread of its own: the store's writer thread, which resolves the
        # future, must not wait for the crash's own writes.
        future.add_done_callback(
            lambda done: threading.Thread(target=settle, args=(done,), daemon=True).start()
        )
        return outer

    def _crash_soon(self) -> None:
        # From a claim, in the maintenance thread, which the crash stops (and joins).
        threading.Thread(target=self._crash, daemon=True).start()

    def _crash(self) -> None:
        executor = self.app.executor
        if executor is not None:
            executor.maintenance.stop()
            for run in executor.table.runs():
                run.release("crashed by perdure.testing")
            executor.store.release_workflows(executor.id, self.app.clock.time())
        self.crashed.set()


@contextmanager
def _counting(app: App) -> Iterator[dict[tuple[str, str], int]]:
    """Count each step function's calls per (workflow ID, step name), while inside."""
    counts: dict[tuple[str, str], int] = {}
    lock = threading.Lock()
    originals: list[tuple[StepDef, Callable[..., Any]]] = []

    def note(name: str) -> None:
        workflow_id = current_workflow_id.get()
        if workflow_id is not None:
            with lock:
                counts[workflow_id, name] = counts.get((workflow_id, name), 0) + 1

    for definition in app.registry.steps.values():
        fn, name = definition.fn, definition.name
        if definition.is_async:

            @functools.wraps(fn)
            async def counted_async(*a: Any, __fn: Any = fn, __name: str = name, **k: Any) -> Any:
                note(__name)
                return await __fn(*a, **k)

            counted: Callable[..., Any] = counted_async
        else:

            @functools.wraps(fn)
            def counted_sync(*a: Any, __fn: Any = fn, __name: str = name, **k: Any) -> Any:
                note(__name)
                return __fn(*a, **k)

            counted = counted_sync
        originals.append((definition, fn))
        # A StepDef is frozen: the step's wrapper holds it, so the function is swapped in
        # place, and put back below.
        object.__setattr__(definition, "fn", counted)
    try:
        yield counts
    finally:
        for definition, fn in originals:
            object.__setattr__(definition, "fn", fn)


def _ended(app: App, workflow_id: str) -> Outcome | None:
    record = app.store.get_workflow(workflow_id)
    if record is None or record.status not in (s.value for s in WorkflowState if s.terminal):
        return None
    return Outcome.of(record)


def _run(app: App, watch: _Watch, fn: Callable[..., Any], workflow_id: str, args: Any) -> Outcome:
    """Start the workflow, crash where armed, recover it, and return its outcome."""
    watch.install(app.store)
    positional, keywords = args
    app.start_with(StartOptions(workflow_id=workflow_id), fn, positional, keywords)
    deadline = time.monotonic() + _WAIT
    while not watch.crashed.wait(0.01):
        if _ended(app, workflow_id) is not None or time.monotonic() > deadline:
            break
    if watch.crashed.is_set():
        app.shutdown(grace=_WAIT)  # the crashed executor: its runs unwind, it stops
        app.launch()  # another worker: it claims the workflow and replays it
        watch.install(app.store)
    # Real time: a workflow that waits for a message nobody sends would wait for ever.
    while (outcome := _ended(app, workflow_id)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"workflow {workflow_id!r} did not end within {_WAIT:g} s of real time: "
                "crash injection runs a workflow that ends by itself (does it wait for a "
                "message, or for a step that hangs?)"
            )
        time.sleep(0.01)
    return outcome


def _describe(outcome: Outcome) -> tuple[str, Any]:
    if outcome.state == WorkflowState.SUCCEEDED:
        return outcome.state.value, outcome.output
    error = decode_error(outcome.error or "{}", WorkflowFailedError)
    return outcome.state.value, (type(error).__name__, str(error))


def _same(expected: Outcome, got: Outcome, loads: Callable[[str], Any]) -> bool:
    if expected.state != got.state:
        return False
    if expected.state == WorkflowState.SUCCEEDED:
        return bool(loads(expected.output or "null") == loads(got.output or "null"))
    return _describe(expected) == _describe(got)


def _extra_runs(app: App, workflow_id: str, counts: dict[tuple[str, str], int]) -> list[str]:
    """The steps whose function ran more (or less) often than their records count."""
    recorded: dict[str, int] = {}
    for step in app.store.load_steps(workflow_id):
        if step.name in app.registry.steps and step.status != StepState.CANCELLED:
            recorded[step.name] = recorded.get(step.name, 0) + step.attempts
    ran = {name: count for (wid, name), count in counts.items() if wid == workflow_id}
    return [
        f"step {name!r} ran {ran.get(name, 0)} time(s) for {recorded.get(name, 0)} recorded "
        "attempt(s)"
        for name in sorted(set(recorded) | set(ran))
        if ran.get(name, 0) != recorded.get(name, 0)
    ]


def _launched(app: App) -> None:
    if not app.launched:
        raise AssertionError(
            f"{app!r} is not launched: crash injection runs the workflow on the app's own "
            "executor (use `with perdure.testing.TestApp() as app:`)"
        )


def crash_points(
    app: App, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> list[CrashPoint]:
    """Run ``fn(*args, **kwargs)`` once, uninterrupted, on ``app`` (launched; a
    ``TestApp`` skips its waits) and return the points a crash would be injected at."""
    _launched(app)
    watch = _Watch(app)
    watch.arm(f"crash-points-{uuid.uuid4().hex[:12]}", None)
    assert watch.workflow_id is not None
    _run(app, watch, fn, watch.workflow_id, (args, kwargs))
    return list(watch.points)


def assert_survives_crashes(
    app: App, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> list[CrashPoint]:
    """Run ``fn(*args, **kwargs)`` uninterrupted, then once per crash point with its
    executor crashed there and the workflow recovered by a new one (see the module).
    Raises ``AssertionError`` naming each point where the outcome differed from the
    uninterrupted run's, or where a step's function ran more (or less) often than its
    records count (a completed step ran again). Returns the points crashed at.

    ``app`` must be launched; it is shut down and launched again at each crash. Results
    are compared decoded: a workflow whose result holds its own ID or a time taken
    outside a step differs from run to run."""
    _launched(app)
    prefix = f"crash-{uuid.uuid4().hex[:12]}"
    watch = _Watch(app)
    failures: list[str] = []
    with _counting(app) as counts:
        watch.arm(f"{prefix}-0", None)
        expected = _run(app, watch, fn, f"{prefix}-0", (args, kwargs))
        points = list(watch.points)
        failures += [
            f"uninterrupted: {problem}" for problem in _extra_runs(app, f"{prefix}-0", counts)
        ]
        loads = functools.partial(_loads, app)
        for point in points:
            workflow_id = f"{prefix}-{point.index}"
            watch.arm(workflow_id, point.index)
            got = _run(app, watch, fn, workflow_id, (args, kwargs))
            if len(watch.points) >= point.index:
                watch.crashed.wait(_WAIT)  # reached: a crash after the outcome may be under way
            if not watch.crashed.is_set():
                failures.append(
                    f"{point}: the run ended after {len(watch.points)} durable write(s) "
                    "without reaching it (does the workflow take other paths from run to run?)"
                )
            if not _same(expected, got, loads):
                failures.append(
                    f"{point}: ended {_describe(got)}, the uninterrupted run {_describe(expected)}"
                )
            failures += [f"{point}: {problem}" for problem in _extra_runs(app, workflow_id, counts)]
    if failures:
        name = app.registry.workflow(fn).name
        raise AssertionError(
            f"workflow {name!r} does not survive every crash:\n  " + "\n  ".join(failures)
        )
    return points


def _loads(app: App, text: str) -> Any:
    return app.serializer.loads(text, Any)
