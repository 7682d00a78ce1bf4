"""Traces, metrics and structured logs (see docs/observability.md).

With ``pip install 'perdure[otel]'`` perdure records OpenTelemetry spans (one per
execution of a workflow, one per step attempt, one per message received) and metrics
through the providers the application configured: the global ones
(``opentelemetry.trace.set_tracer_provider``, ``opentelemetry.metrics.set_meter_provider``)
or those given to ``configure``. Without the extra, or with no provider configured, it
records nothing and costs nothing measurable.

Every log record can carry which workflow, step, attempt and executor it is about:
``LogContextFilter`` adds the fields (``FIELDS``) to records, ``JsonFormatter`` prints
them as JSON (``perdure worker --log-format json`` uses both), and ``log_fields()``
returns them for the code running now.
"""

from __future__ import annotations

from typing import Any

from . import _telemetry
from ._logfields import FIELDS, JsonFormatter, LogContextFilter, log_fields

#: Whether OpenTelemetry is installed (the ``perdure[otel]`` extra).
AVAILABLE = _telemetry.AVAILABLE


def configure(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Record perdure's spans with ``tracer_provider`` and its metrics with
    ``meter_provider`` instead of the global providers (None: the global one), from the
    next execution on. For an application that keeps its providers out of the global
    ones, and for tests (OpenTelemetry's in-memory exporter and reader)."""
    _telemetry.configure(tracer_provider, meter_provider)


__all__ = [
    "AVAILABLE",
    "FIELDS",
    "JsonFormatter",
    "LogContextFilter",
    "configure",
    "log_fields",
]
