"""Sagas: undo what a workflow did, in reverse order, when it fails or is cancelled.

::

    with perdure.saga() as saga:
        charge = authorize(order)
        saga.compensate(refund, charge)
        reservation = reserve(order)
        saga.compensate(release, reservation)
        ship(order)            # raises OutOfStock: release, then refund, run

After each step that did something, ``saga.compensate(step, *args)`` registers its
undo: another ``@app.step``. When the block ends with an error (any ``Exception``)
or a cancellation (``perdure.Cancelled``, a passed deadline included), the registered
compensations run in reverse order, each a durable step with its own retry policy,
and then the original error goes on: the workflow's outcome is that error, with a
note saying which compensations ran (and which failed). A compensation that fails
after its retries does not stop the others.

Nothing here is recorded apart from the steps themselves: the registrations are
plain code, made again by every replay at the same places, and the compensations
are steps at the positions that follow. So a crash in the middle of compensating is
resumed like any workflow: the replay reaches the failed step again (its failure is
recorded), registers the same undos, and the compensations that completed return
their records without running; the next one runs. Each undo completes once.

A cancellation or deadline delivered while compensating (at a compensation step's
position) is taken as said and the compensation called again: compensating is what a
cancel asks for, it must not stop it. perdure's own signals (a suspension, a lost
lease) pass through untouched: they are not failures of the workflow.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from ._engine.scope import current_workflow_id
from ._errors import Cancelled, ConfigurationError
from ._registry import STEP_ATTR, StepDef
from ._text import shorten

log = logging.getLogger("perdure")

#: How often one compensation is called when calls are cancelled (a cancel and a
#: deadline are each delivered once).
_CALLS = 3


@dataclass(frozen=True)
class _Undo:
    definition: StepDef
    step: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class Saga:
    """The compensations of one ``with perdure.saga()`` block (see ``perdure.saga``).

    After the block, ``compensated`` holds the names of the compensations that ran (in
    the order they ran) and ``failed`` the ``(name, error)`` of those that failed."""

    compensated: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    _undos: list[_Undo] = field(default_factory=list, init=False, repr=False)

    def compensate(self, step: Any, /, *args: Any, **kwargs: Any) -> None:
        """Register ``step(*args, **kwargs)`` (an ``@app.step``) as the undo of what the
        block did so far: it runs if the block fails or is cancelled, before the undos
        registered earlier. Arguments are taken as given (record them in the steps
        whose work they undo, e.g. the charge ID a step returned)."""
        definition = getattr(step, STEP_ATTR, None)
        if not isinstance(definition, StepDef):
            raise ConfigurationError(
                f"saga.compensate() takes a step (a function decorated with @app.step), not "
                f"{shorten(repr(step))}: a compensation must be recorded, or a replay would "
                "run it again"
            )
        self._undos.append(_Undo(definition, step, args, dict(kwargs)))

    # -- sync ------------------------------------------------------------------------------

    def __enter__(self) -> Saga:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None or not isinstance(exc, Exception | Cancelled):
            return False
        for undo in reversed(self._undos):
            if undo.definition.is_async:
                self._failed(undo, "an async step: use `async with perdure.saga()`")
                continue
            for _ in range(_CALLS):
                try:
                    undo.step(*undo.args, **undo.kwargs)
                except Cancelled:
                    continue  # delivered at this position: call it again
                except Exception as error:  # noqa: BLE001 - the others still run
                    self._failed(undo, _summary(error))
                else:
                    self.compensated.append(undo.definition.name)
                break
        self._note(exc)
        return False

    # -- async -----------------------------------------------------------------------------

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None or not isinstance(exc, Exception | Cancelled):
            return False
        for undo in reversed(self._undos):
            for _ in range(_CALLS):
                try:
                    result = undo.step(*undo.args, **undo.kwargs)
                    if inspect.isawaitable(result):
                        await result
                except Cancelled:
                    continue
                except Exception as error:  # noqa: BLE001 - the others still run
                    self._failed(undo, _summary(error))
                else:
                    self.compensated.append(undo.definition.name)
                break
        self._note(exc)
        return False

    # -- the outcome -----------------------------------------------------------------------

    def _failed(self, undo: _Undo, why: str) -> None:
        self.failed.append((undo.definition.name, why))
        log.warning(
            "workflow %s: compensation %s failed: %s",
            current_workflow_id.get(),
            undo.definition.name,
            why,
        )

    def _note(self, exc: BaseException) -> None:
        """Say on the original error which compensations ran: the note is part of the
        traceback recorded with the workflow's outcome."""
        ran = ", ".join(self.compensated) or "none"
        note = f"perdure.saga: compensations run (in order): {ran}"
        if self.failed:
            failed = "; ".join(f"{name} ({why})" for name, why in self.failed)
            note += f"; compensations that failed: {failed}"
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list) and note in notes:
            return
        add_note = getattr(exc, "add_note", None)
        if add_note is not None:  # Python 3.11+
            add_note(note)
        else:
            exc.__notes__ = [*(notes or []), note]  # type: ignore[attr-defined]


def _summary(error: BaseException) -> str:
    return shorten(f"{type(error).__name__}: {error}")


def saga() -> Saga:
    """A saga: ``with perdure.saga() as saga:`` (``async with`` in an async workflow).
    Register the undo of each step that did something with ``saga.compensate(step,
    *args)``; if the block fails or is cancelled, the undos run in reverse order, each
    a durable step with its own retries, and the original error goes on, noting which
    ran. A crash while compensating resumes the compensating: each undo completes once.
    """
    return Saga()
