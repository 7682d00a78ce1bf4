"""A finished run is freed at once, by reference counting, not by the cycle collector.

A reference cycle through a run (a closure or a bound method it holds of itself) keeps
its whole object graph (history, signals, writes, events, locks) alive until a
garbage collection finds it: with thousands of workflows a second, those collections
walked everything again and again and cost the event loop a third of its time.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable

import perdure
from perdure._engine.state import RunState, current_run


def _in_cycles(refs: list[weakref.ref[RunState]]) -> int:
    """How many of the runs only the cycle collector can free."""
    time.sleep(0.2)  # the executor lets go of a run just after it tells the outcome
    # Still alive with the collector off: held by something (an idle pool thread keeps
    # the last task it ran) or by a cycle. The collection tells which (it clears the
    # weak references of what it finds unreachable, so look by ID).
    alive = {id(run) for ref in refs if (run := ref()) is not None}
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collection finds unreachable, to look at
    try:
        gc.collect()
        garbage = {id(thing) for thing in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return len(alive & garbage)


def _runs_are_freed(
    app: perdure.App, workflow: Callable[..., object], refs: list[weakref.ref[RunState]]
) -> None:
    with app:
        app.run(workflow, 0)  # imports, caches: whatever lives for good is made now
        gc.collect()
        gc.disable()
        try:
            refs.clear()
            for i in range(3):
                assert app.run(workflow, i) == i
            assert len(refs) == 3
            assert _in_cycles(refs) == 0, "a finished run is held by a reference cycle"
        finally:
            gc.enable()


def test_a_finished_async_run_is_freed_without_the_cycle_collector(app: perdure.App) -> None:
    refs: list[weakref.ref[RunState]] = []

    @app.step()
    async def double(n: int) -> int:
        return 2 * n

    @app.workflow()
    async def twice(n: int) -> int:
        run = current_run.get()
        assert run is not None
        refs.append(weakref.ref(run))
        await double(n)
        await double(n)
        return n

    _runs_are_freed(app, twice, refs)


def test_a_finished_sync_run_is_freed_without_the_cycle_collector(app: perdure.App) -> None:
    refs: list[weakref.ref[RunState]] = []

    @app.step()
    def double(n: int) -> int:
        return 2 * n

    @app.workflow()
    def twice(n: int) -> int:
        run = current_run.get()
        assert run is not None
        refs.append(weakref.ref(run))
        double(n)
        double(n)
        return n

    _runs_are_freed(app, twice, refs)
