"""``perdure.continue_as_new``: bound the history of a workflow that runs for ever."""

from __future__ import annotations

from typing import Any, NoReturn

from .._errors import ConfigurationError, ContinueAsNew
from .._serialization import encode_call
from .state import current_run


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """End this run of the workflow and start it afresh, from the top, with these
    arguments, under the same workflow ID.

    In one transaction its recorded steps are dropped and its inputs replaced, so a
    workflow that loops for ever (a monitor, an aggregator) keeps a bounded history.
    Its events, pending messages, parent, cancel request and deadline carry over;
    whoever waits for its result waits for the last run's. Works in sync and async
    workflows (it raises an internal signal: do not catch ``BaseException`` around it).
    """
    run = current_run.get()
    if run is None:
        raise ConfigurationError("perdure.continue_as_new() was called outside a workflow")
    inputs = encode_call(
        run.serializer,
        run.definition.fn,
        args,
        kwargs,
        f"workflow {run.definition.name!r} (continue_as_new)",
    )
    run.check_lease()
    # The run's pending writes are made durable before the executor replaces its
    # history (``WorkflowRun`` flushes on every way out).
    run.unwind(ContinueAsNew(run.workflow_id, inputs))
