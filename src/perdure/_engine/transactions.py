"""Transactional steps: one attempt of a step whose function runs inside the transaction
that records it (``@app.transaction``), and ``perdure.connection()`` inside it.

The attempt is one ``Store.transact``: the fence, the user's function on the
transaction's connection, the step's SUCCEEDED record, one commit. Its writes to the
user's tables therefore commit exactly when its record does: a crash before the commit
leaves neither (the step runs again, as any step in flight), one after leaves both (it
never runs again). A failed attempt rolls its writes back and is recorded like any
failed step attempt (RETRYING or FAILED, in a write of its own), retried by the step's
policy; a lost race (serialization failure, deadlock) runs the transaction again
inside the store.
"""

from __future__ import annotations

from typing import Any

from .._errors import (
    ConfigurationError,
    LeaseLost,
    SerializationError,
    StoreError,
)
from .._model import StepRecord, StepState
from ..storage import EVENT_STREAM, Transaction
from .attempts import KEEPS_MEANING
from .call import StepCall
from .effects import Attempted, Blocking, Op
from .scope import current_workflow_id
from .state import StepContext, current_run, current_step


def transaction_attempt(call: StepCall, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Op[Attempted]:
    """One attempt of the transactional step at ``call``: ``recorded`` when it committed
    with its record; an ``error`` (nothing committed) when its function failed."""
    run = call.run
    try:
        attempted = yield Blocking(_transact, (call, args, kwargs))
    except StoreError as exc:
        # The database failed (nothing committed, or in doubt): resumed from the record.
        raise run.failed(exc) from exc
    if attempted is None:
        run.unwind(LeaseLost(run.workflow_id, run.lease.epoch))
    result: Attempted = attempted
    return result


def _transact(call: StepCall, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Attempted | None:
    run, definition = call.run, call.definition
    record = StepRecord(
        call.position,
        definition.name,
        StepState.SUCCEEDED,
        None,
        None,
        call.attempts,
        None,
        run.clock.time(),
        call.started_at,
    )
    outputs: list[str] = []

    def body(transaction: Transaction) -> str:
        # Also in a thread of its own (an async workflow's): the body sees its workflow's
        # ID and its step, and a step it calls is a plain call.
        inside = StepContext(run, call.position, call.attempts, transaction)
        tokens = (
            current_run.set(None),
            current_step.set(inside),
            current_workflow_id.set(run.workflow_id),
        )
        try:
            value = definition.fn(*args, **kwargs)
        finally:
            current_workflow_id.reset(tokens[2])
            current_step.reset(tokens[1])
            current_run.reset(tokens[0])
        try:
            output = run.serializer.dumps(value, definition.return_hint)
        except SerializationError as error:
            raise SerializationError(
                f"transactional step {definition.name!r} (position {call.position}) of "
                f"workflow {run.workflow_id!r} returned a value that can't be recorded "
                f"(its transaction was rolled back): {error}"
            ) from error
        outputs.append(output)
        return output

    try:
        committed = run.store.transact(run.workflow_id, run.lease, record, body)
    except KEEPS_MEANING:
        raise
    except StoreError:
        raise
    except BaseException as exc:  # noqa: BLE001 - the function's failure: a failed attempt
        return Attempted(error=exc)
    if not committed:
        return None
    run.notifier.poke(EVENT_STREAM + run.workflow_id)  # what it wrote to streams
    # Hand the workflow the decoded value: the same thing as on every replay.
    return Attempted(
        value=run.serializer.loads(outputs[-1], definition.return_hint), recorded=True
    )


def connection() -> Any:
    """The DB-API connection of the running transactional step (``@app.transaction``):
    ``psycopg.Connection`` on PostgreSQL, ``sqlite3.Connection`` on SQLite, inside the
    transaction that records the step. What you write through it commits exactly when
    the step's record does. Don't commit or roll it back yourself. On PostgreSQL its
    search path is the database's default (your schema), not perdure's. Outside a
    transactional step it raises ``ConfigurationError``."""
    step = current_step.get()
    if step is None or step.transaction is None:
        where = "a step" if step is not None else "no transactional step"
        raise ConfigurationError(
            f"perdure.connection() was called in {where}: it is the connection of a "
            "transactional step's transaction; decorate the function with @app.transaction"
        )
    return step.transaction.connection
