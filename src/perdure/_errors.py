"""The exceptions perdure raises.

Every error derives from one root, ``PerdureError``, except the control-flow
signals, which derive from ``BaseException`` so that a workflow's
``except Exception:`` cannot swallow them::

    PerdureError
    ├── ConfigurationError        bad URL, bad setting, app used in the wrong state
    │   └── InvalidValueError     a value breaks its rule (empty ID, NaN timeout); a ValueError
    ├── SerializationError        a value that the serializer cannot encode or decode
    ├── UnknownWorkflowError      a workflow name that this app has not registered
    ├── WorkflowNotFoundError     a workflow ID that the store does not hold
    ├── AmbiguousWorkflowError    a workflow ID held by the databases of several regions
    ├── NonDeterminismError       replay met a different step than the one recorded
    ├── WorkflowFailedError       a failed workflow whose error type cannot be rebuilt
    ├── StepFailedError           a failed step whose error type cannot be rebuilt
    ├── WorkflowTimeoutError      waiting for a result took longer than asked (also TimeoutError)
    ├── WorkflowFinishedError     a message was sent to a workflow that has finished
    ├── ErasureRefusedError       a data subject's workflows are still active: nothing erased
    ├── WorkflowCancelledError    the workflow was cancelled (what its result raises)
    ├── DeadlineExceededError     the workflow ran past its deadline (recorded; also TimeoutError)
    ├── StepTimeoutError          a step attempt ran past the step's timeout (also TimeoutError)
    └── StoreError                the database refused or failed an operation
        ├── StoreUnavailableError the database cannot be reached (yet): retried
        ├── StoreRejectedError    the database refused the data or the statement for
        │                         good (too large, a constraint): not retried
        └── StoreInDoubtError     a write failed at its commit: it may have taken effect

    BaseException
    ├── Cancelled                 raised inside a workflow asked to cancel, at its next
    │   │                         step or wait; ``finally`` blocks and compensation run
    │   └── DeadlineExceeded      the same, when the workflow's deadline passed
    ├── LeaseLost                 this executor no longer owns the workflow (fenced out)
    └── CheckpointFailed          a checkpoint could not be written; the executor retries

Each exception keeps its constructor arguments in ``args`` so that it survives
pickling and crossing process boundaries.
"""

from __future__ import annotations


class PerdureError(Exception):
    """Root of every error perdure raises on purpose."""


class ConfigurationError(PerdureError):
    """The app, its URL or one of its settings is wrong; the message says which."""


class InvalidValueError(ConfigurationError, ValueError):
    """A value handed to perdure breaks its rule (a non-finite timeout, an empty workflow
    ID, a topic with a NUL character...); the message names the parameter, the value and
    the rule. Also a ``ValueError``, as bad arguments are in Python."""


def workflow_id_taken(workflow_id: str, existing: str, wanted: str) -> ConfigurationError:
    """The error for a start whose ID belongs to a workflow of another name (nothing was
    started): the same words for a start from a client and for a child's start."""
    return ConfigurationError(
        f"workflow ID {workflow_id!r} already belongs to a {existing!r} workflow; "
        f"it was not started again as {wanted!r}: choose another ID"
    )


class SerializationError(PerdureError):
    """A value could not be encoded or decoded by the configured serializer."""


class UnknownWorkflowError(PerdureError):
    """A workflow was named that this app has not registered."""

    def __init__(self, name: str, known: tuple[str, ...] = ()) -> None:
        super().__init__(name, known)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        known = ", ".join(sorted(self.known)) or "none"
        return (
            f"no workflow named {self.name!r} is registered on this app (registered: {known}); "
            "decorate the function with @app.workflow() in a module the worker imports"
        )


class WorkflowNotFoundError(PerdureError):
    """No workflow with this ID exists in the store."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(workflow_id)
        self.workflow_id = workflow_id

    def __str__(self) -> str:
        return f"no workflow with ID {self.workflow_id!r} exists in this database"


class AmbiguousWorkflowError(PerdureError):
    """A workflow ID was looked up across an app's regions and more than one region's
    database holds it: perdure does not pick one."""

    def __init__(self, workflow_id: str, regions: tuple[str, ...]) -> None:
        super().__init__(workflow_id, regions)
        self.workflow_id = workflow_id
        self.regions = regions

    def __str__(self) -> str:
        found = " and ".join(repr(region) for region in self.regions)
        return (
            f"workflow ID {self.workflow_id!r} exists in the databases of regions {found}: "
            f"name the region, e.g. app.region({self.regions[0]!r}).retrieve"
            f"({self.workflow_id!r})"
        )


class NonDeterminismError(PerdureError):
    """On replay, the step at a position differs from the step recorded there.

    The workflow's code changed under a running workflow (or depends on something
    other than its arguments and recorded results). The executor then holds the
    workflow (``WorkflowStatus.held``) instead of failing it.
    """

    def __init__(self, workflow_id: str, position: str, recorded: str, actual: str) -> None:
        super().__init__(workflow_id, position, recorded, actual)
        self.workflow_id = workflow_id
        self.position = position
        self.recorded = recorded
        self.actual = actual

    def __str__(self) -> str:
        return (
            f"workflow {self.workflow_id!r} is not deterministic: at position {self.position} "
            f"the history records step {self.recorded!r} but the code now calls {self.actual!r}. "
            "The workflow's code changed while it was running: it is held until code that "
            "replays it runs (roll back, or branch with perdure.patched; see "
            "docs/changing-code.md)."
        )


class _RecordedFailure(PerdureError):
    """A recorded error whose original exception type could not be rebuilt."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(type_name, message, traceback)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


class WorkflowFailedError(_RecordedFailure):
    """A workflow failed with an error whose type can't be rebuilt in this process.

    ``type_name``, ``message`` and ``traceback`` hold what was recorded.
    """


class StepFailedError(_RecordedFailure):
    """A step failed with an error whose type can't be rebuilt in this process.

    ``type_name``, ``message`` and ``traceback`` hold what was recorded.
    """


class WorkflowTimeoutError(PerdureError, TimeoutError):
    """A wait for a workflow's result ran out of time; the workflow itself goes on."""

    def __init__(self, workflow_id: str, timeout: float) -> None:
        super().__init__(workflow_id, timeout)
        self.workflow_id = workflow_id
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"workflow {self.workflow_id!r} did not finish within {self.timeout}s; it keeps "
            "running: wait again with handle.result() or look at handle.status()"
        )


class WorkflowFinishedError(PerdureError):
    """The workflow has already finished: a message sent to it would never be received."""

    def __init__(self, workflow_id: str, status: str) -> None:
        super().__init__(workflow_id, status)
        self.workflow_id = workflow_id
        self.status = status

    def __str__(self) -> str:
        return (
            f"workflow {self.workflow_id!r} has already finished ({self.status}); the message "
            "was not stored, since nothing would ever receive it"
        )


class WorkflowNotResumableError(PerdureError):
    """``app.resume`` of a workflow that is not FAILED or CANCELLED (it runs, waits to, or
    succeeded): nothing was changed."""

    def __init__(self, workflow_id: str, status: str) -> None:
        super().__init__(workflow_id, status)
        self.workflow_id = workflow_id
        self.status = status

    def __str__(self) -> str:
        return (
            f"workflow {self.workflow_id!r} is {self.status}, so it cannot be resumed (only a "
            "FAILED or CANCELLED one can); nothing was changed. To run it again from a step, "
            "fork it (app.fork / perdure fork)"
        )


class ErasureRefusedError(PerdureError):
    """``app.erase(subject=...)`` found workflows of the subject still active (PENDING or
    RUNNING): nothing was erased (on an app with regions: in their regions; ``erased``
    lists what the other regions erased)."""

    def __init__(self, subject: str, active: list[str], erased: list[str] | None = None) -> None:
        super().__init__(subject, active, erased)
        self.subject = subject
        self.active = active
        self.erased = erased or []

    def __str__(self) -> str:
        shown = ", ".join(repr(workflow_id) for workflow_id in self.active[:10])
        more = f" and {len(self.active) - 10} more" if len(self.active) > 10 else ""
        done = (
            f"only the {len(self.erased)} workflow(s) of the other regions were erased"
            if self.erased
            else "nothing was erased"
        )
        return (
            f"data subject {self.subject!r} has {len(self.active)} active workflow(s) "
            f"({shown}{more}); {done}. Cancel them (app.cancel / perdure cancel), "
            "wait until they have finished, then erase again"
        )


class WorkflowCancelledError(PerdureError):
    """The workflow was cancelled (``app.cancel``) and ended without a result."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(workflow_id)
        self.workflow_id = workflow_id

    def __str__(self) -> str:
        return f"workflow {self.workflow_id!r} was cancelled"


class DeadlineExceededError(PerdureError, TimeoutError):
    """The workflow was still running at its deadline (``app.start(..., timeout=)``); its
    outcome records this error."""

    def __init__(self, workflow_id: str, timeout: float) -> None:
        super().__init__(workflow_id, timeout)
        self.workflow_id = workflow_id
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"workflow {self.workflow_id!r} did not finish within its deadline of "
            f"{self.timeout:g}s after it was started"
        )


class StepTimeoutError(PerdureError, TimeoutError):
    """One attempt of a step ran longer than the step's ``timeout``; the attempt counts as
    failed and the step's retry policy decides what comes next."""

    def __init__(self, step: str, timeout: float) -> None:
        super().__init__(step, timeout)
        self.step = step
        self.timeout = timeout

    def __str__(self) -> str:
        return f"step {self.step!r} did not finish within its timeout of {self.timeout:g}s"


class StoreError(PerdureError):
    """The database refused or failed an operation; the message names it."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached; perdure retries, and so may the caller."""


class StoreRejectedError(StoreError):
    """The database refused an operation for a reason that retrying cannot heal (a value
    too large for an index, a constraint, a statement it does not accept); the message
    says which operation and what to do."""


class StoreInDoubtError(StoreError):
    """A write failed at its commit, after the database had been sent it (an I/O error
    while committing): it may have taken effect or not, and this process cannot tell.
    Look before repeating it; a start with the same workflow ID is idempotent."""


class LeaseLost(BaseException):  # noqa: N818 - a signal, named like KeyboardInterrupt
    """This executor no longer owns the workflow: another one took it over.

    Raised inside a stale execution when the store rejects its write by the
    fencing epoch; it unwinds the workflow function and nothing more is recorded.
    """

    def __init__(self, workflow_id: str, epoch: int, reason: str = "") -> None:
        super().__init__(workflow_id, epoch, reason)
        self.workflow_id = workflow_id
        self.epoch = epoch
        self.reason = reason

    def __str__(self) -> str:
        reason = self.reason or "another executor owns it now"
        return (
            f"lost the lease on workflow {self.workflow_id!r} (epoch {self.epoch}): {reason}, "
            "so this execution stops and records nothing more"
        )


class CheckpointFailed(BaseException):  # noqa: N818 - a signal, like LeaseLost
    """A step or outcome could not be written (the database failed or went away).

    It unwinds the workflow function past any ``except Exception:``, because the
    execution cannot go on without its checkpoints; the executor runs the workflow
    again from its recorded steps once the database answers.
    """

    def __init__(self, workflow_id: str, reason: str) -> None:
        super().__init__(workflow_id, reason)
        self.workflow_id = workflow_id
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"could not checkpoint workflow {self.workflow_id!r}: {self.reason}; it will be "
            "resumed from its recorded steps when the database answers again"
        )


class Suspended(BaseException):  # noqa: N818 - an internal signal, like LeaseLost
    """The workflow waits longer than ``suspend_after``: unwind it, and let the executor
    record it suspended until ``wake_at`` (and waiting for a message on ``topic``)."""

    def __init__(self, workflow_id: str, wake_at: float, topic: str | None) -> None:
        super().__init__(workflow_id, wake_at, topic)
        self.workflow_id = workflow_id
        self.wake_at = wake_at
        self.topic = topic

    def __str__(self) -> str:
        return f"workflow {self.workflow_id!r} suspended until {self.wake_at}"


class Cancelled(BaseException):  # noqa: N818 - a signal, like asyncio.CancelledError
    """Raised inside a workflow that was asked to cancel (``app.cancel``), at its next step
    or wait (a running async step is interrupted).

    It derives from ``BaseException`` so that ``except Exception:`` does not swallow it.
    Cleanup in ``finally`` blocks or in ``except perdure.Cancelled:`` runs normally, steps
    included (they are recorded); re-raise it to end the workflow CANCELLED.
    """

    def __init__(self, workflow_id: str, reason: str = "cancelled by request") -> None:
        super().__init__(workflow_id, reason)
        self.workflow_id = workflow_id
        self.reason = reason

    def __str__(self) -> str:
        return f"workflow {self.workflow_id!r}: {self.reason}"


class DeadlineExceeded(Cancelled):
    """Raised inside a workflow whose deadline passed, like ``Cancelled``; if it propagates
    the workflow fails with ``DeadlineExceededError``."""

    def __init__(self, workflow_id: str, timeout: float) -> None:
        BaseException.__init__(self, workflow_id, timeout)
        self.workflow_id = workflow_id
        self.reason = f"deadline of {timeout:g}s exceeded"
        self.timeout = timeout


class ContinueAsNew(BaseException):  # noqa: N818 - an internal signal
    """``perdure.continue_as_new``: end this run and start the workflow afresh with these
    (encoded) inputs."""

    def __init__(self, workflow_id: str, inputs: str) -> None:
        super().__init__(workflow_id, inputs)
        self.workflow_id = workflow_id
        self.inputs = inputs
