"""perdure: durable execution for plain Python functions.

Decorate functions with ``@app.workflow`` and ``@app.step``; every completed step
is checkpointed, and an interrupted workflow resumes from its last completed step
on any executor. See README.md and docs/guarantees.md.
"""

from . import probes
from ._app import App, Settings
from ._breaker import BreakerStatus, CircuitBreaker
from ._clock import Clock, SystemClock
from ._errors import (
    CheckpointFailed,
    ConfigurationError,
    LeaseLost,
    NonDeterminismError,
    PerdureError,
    SerializationError,
    StepFailedError,
    StoreError,
    StoreUnavailableError,
    UnknownWorkflowError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from ._handle import StepStatus, WorkflowHandle, WorkflowStatus
from ._recorded import now, random, uuid4, workflow_id
from ._retry import Retry
from ._serialization import JSONSerializer, PickleSerializer, Serializer
from ._waiting import (
    recv,
    recv_async,
    set_event,
    sleep,
    sleep_async,
    sleep_until,
    sleep_until_async,
)

__version__ = "0.1.0"

__all__ = [
    "App",
    "BreakerStatus",
    "CheckpointFailed",
    "CircuitBreaker",
    "Clock",
    "ConfigurationError",
    "JSONSerializer",
    "LeaseLost",
    "NonDeterminismError",
    "PerdureError",
    "PickleSerializer",
    "Retry",
    "SerializationError",
    "Serializer",
    "Settings",
    "StepFailedError",
    "StepStatus",
    "StoreError",
    "StoreUnavailableError",
    "SystemClock",
    "UnknownWorkflowError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowStatus",
    "WorkflowTimeoutError",
    "__version__",
    "now",
    "probes",
    "random",
    "recv",
    "recv_async",
    "set_event",
    "sleep",
    "sleep_async",
    "sleep_until",
    "sleep_until_async",
    "uuid4",
    "workflow_id",
]
