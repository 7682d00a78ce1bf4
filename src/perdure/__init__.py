"""perdure: durable execution for plain Python functions.

Decorate functions with ``@app.workflow`` and ``@app.step``; every completed step
is checkpointed, and an interrupted workflow resumes from its last completed step
on any executor. See README.md and docs/guarantees.md.
"""

from . import observability, probes, testing
from ._app import App, Settings
from ._breaker import BreakerStatus, CircuitBreaker
from ._clock import Clock, SystemClock
from ._compliance import AuditEntry, GcResult
from ._crypto import EncryptingSerializer, generate_key
from ._engine.continuing import continue_as_new
from ._engine.events import set_event, set_event_async
from ._engine.fanin import first, first_async, gather
from ._engine.messages import recv, recv_async
from ._engine.patching import deprecate_patch, patched
from ._engine.streams import close_stream, close_stream_async, write_stream, write_stream_async
from ._engine.timers import sleep, sleep_async, sleep_until, sleep_until_async
from ._engine.transactions import connection
from ._engine.values import now, random, uuid4, workflow_id
from ._errors import (
    AmbiguousWorkflowError,
    Cancelled,
    CheckpointFailed,
    ConfigurationError,
    DeadlineExceeded,
    DeadlineExceededError,
    ErasureRefusedError,
    InvalidValueError,
    LeaseLost,
    NonDeterminismError,
    PerdureError,
    SerializationError,
    StepFailedError,
    StepTimeoutError,
    StoreError,
    StoreRejectedError,
    StoreUnavailableError,
    UnknownWorkflowError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
    WorkflowNotResumableError,
    WorkflowTimeoutError,
)
from ._handle import HoldStatus, StepStatus, WorkflowHandle, WorkflowStatus
from ._inspect import StepDetail, WorkflowDetail, WorkflowPage
from ._queue import Queue, QueuedStatus, QueueReason, Rate
from ._retention import Retention
from ._retry import Retry
from ._saga import Saga, saga
from ._scheduling import ScheduleStatus
from ._serialization import JSONSerializer, PickleSerializer, Serializer
from ._versions import VersionStatus

__version__ = "0.1.0"

__all__ = [
    "App",
    "AuditEntry",
    "EncryptingSerializer",
    "AmbiguousWorkflowError",
    "ErasureRefusedError",
    "GcResult",
    "Retention",
    "generate_key",
    "BreakerStatus",
    "Cancelled",
    "CheckpointFailed",
    "CircuitBreaker",
    "Clock",
    "ConfigurationError",
    "InvalidValueError",
    "DeadlineExceeded",
    "DeadlineExceededError",
    "HoldStatus",
    "JSONSerializer",
    "LeaseLost",
    "NonDeterminismError",
    "PerdureError",
    "PickleSerializer",
    "Queue",
    "QueueReason",
    "QueuedStatus",
    "Rate",
    "Retry",
    "ScheduleStatus",
    "Saga",
    "SerializationError",
    "Serializer",
    "Settings",
    "StepFailedError",
    "StepStatus",
    "StepTimeoutError",
    "StoreError",
    "StoreRejectedError",
    "StoreUnavailableError",
    "SystemClock",
    "UnknownWorkflowError",
    "VersionStatus",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowFinishedError",
    "WorkflowNotResumableError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowStatus",
    "WorkflowDetail",
    "WorkflowPage",
    "StepDetail",
    "WorkflowTimeoutError",
    "__version__",
    "close_stream",
    "close_stream_async",
    "connection",
    "continue_as_new",
    "deprecate_patch",
    "first",
    "first_async",
    "gather",
    "now",
    "observability",
    "patched",
    "probes",
    "random",
    "recv",
    "recv_async",
    "saga",
    "set_event",
    "set_event_async",
    "sleep",
    "sleep_async",
    "sleep_until",
    "sleep_until_async",
    "testing",
    "uuid4",
    "workflow_id",
    "write_stream",
    "write_stream_async",
]
