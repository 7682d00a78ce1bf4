"""``@app.transaction``: steps whose function runs inside the database transaction that
records them (see ``_engine/transactions.py``), bound as an ``App`` method."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from ._engine.state import current_run
from ._engine.steps import call_step, call_step_async
from ._errors import ConfigurationError
from ._registry import Registry, StepDef, default_name, is_async_function
from ._retry import Retry

P = ParamSpec("P")
R = TypeVar("R")


class TransactionHost(Protocol):
    """What registering a transactional step needs of the app."""

    @property
    def registry(self) -> Registry: ...


@overload
def transaction(app: TransactionHost, fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def transaction(
    app: TransactionHost, *, name: str | None = None, retry: Retry | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def transaction(
    app: TransactionHost,
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: Retry | None = None,
) -> Any:
    """Register a transactional step: ``@app.transaction`` or ``@app.transaction(retry=...)``.

    Its function runs inside the database transaction that records the step, on the
    app's own database: what it writes through ``perdure.connection()`` (a ``psycopg``
    connection on PostgreSQL, ``sqlite3`` on SQLite) commits exactly when the step's
    record does, so its effect on your tables happens exactly once, whatever crashes.
    A failed attempt rolls its writes back and is retried by ``retry`` (default: no
    retry); a lost race (serialization failure, deadlock) runs the transaction again.
    The function must be a plain ``def`` (a DB-API connection blocks); in an async
    workflow, ``await`` its call (it runs in a thread). Keep it short: it holds the
    workflow's row, and on SQLite every other write, until it commits. Call it from a
    workflow (``ConfigurationError`` elsewhere).
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        step_name = default_name(fn) if name is None else name
        if is_async_function(fn):
            raise ConfigurationError(
                f"transactional step {step_name!r} is an async def: its DB-API connection "
                "blocks; make it a plain def (an async workflow awaits its call)"
            )
        return _wrapper(app.registry.add_step(fn, name, retry, transaction=True))

    return decorate if fn is None else decorate(fn)


def _wrapper(definition: StepDef) -> Callable[..., Any]:
    fn = definition.fn

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        run = current_run.get()
        if run is None:
            raise ConfigurationError(
                f"transactional step {definition.name!r} was called outside a workflow "
                "(or inside a step): it runs in the transaction that records it; call it "
                "from a workflow"
            )
        if run.definition.is_async:
            return call_step_async(run, definition, args, kwargs)
        return call_step(run, definition, args, kwargs)

    return call
