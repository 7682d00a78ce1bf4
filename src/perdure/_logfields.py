"""Structured log fields: which workflow, step, attempt and executor a log record is about.

A run sets ``log_context`` when it begins (the workflow's ID and name, the executor
that runs it) and each step attempt sets it again around the step's body (adding the
step, its position and the attempt number), so that *any* record logged meanwhile, by
perdure or by the workflow's and steps' own code, in the workflow's thread or task or
in a task it created, can carry them. ``LogContextFilter`` copies them onto a record as
attributes (``record.workflow_id`` ...; None outside a workflow), and ``JsonFormatter``
prints a record as one JSON object with them.

The context is one tuple set with one ``ContextVar.set``: it costs a step attempt about
a tenth of a microsecond, with or without logging configured.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ._telemetry import current_ids

#: The structured fields, in the order of ``log_context``'s tuple.
FIELDS = ("workflow_id", "workflow_name", "executor", "step", "position", "attempt")

#: (workflow ID, workflow name, executor, step, position, attempt) of the code running
#: now; the last three are None outside a step attempt.
LogContext = tuple[str, str, str, str | None, str | None, int | None]
log_context: ContextVar[LogContext | None] = ContextVar("perdure_log_context", default=None)

_NONE = (None,) * len(FIELDS)


def log_fields() -> dict[str, Any]:
    """The structured fields of the code running now (each None outside a workflow, and
    ``step``, ``position``, ``attempt`` None outside a step attempt)."""
    return dict(zip(FIELDS, log_context.get() or _NONE, strict=True))


class LogContextFilter(logging.Filter):
    """A ``logging.Filter`` that adds ``workflow_id``, ``workflow_name``, ``executor``,
    ``step``, ``position`` and ``attempt`` to every record it sees (None outside a
    workflow; a value given with ``extra=`` is kept). Add it to a *handler* to reach the
    records of every logger (a filter on a logger sees only that logger's own records):
    ``handler.addFilter(perdure.observability.LogContextFilter())``. It never drops a
    record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the fields; always True."""
        values = log_context.get() or _NONE
        attributes = record.__dict__
        for name, value in zip(FIELDS, values, strict=True):
            if attributes.get(name) is None:
                attributes[name] = value
        return True


#: The attributes every ``LogRecord`` has: anything else on a record came with ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (UTC, ISO 8601), ``level``,
    ``logger``, ``message``, the structured fields of ``LogContextFilter`` (looked up
    here when no filter added them), ``trace_id`` and ``span_id`` when an OpenTelemetry
    span is current, the fields given with ``extra=``, and ``exception`` (the traceback)
    when there is one. ``clean`` is applied to every text (the CLI removes database
    passwords with it)."""

    def __init__(self, clean: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self._clean = clean or (lambda text: text)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        clean = self._clean
        seconds = record.created
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": clean(record.getMessage()),
        }
        values = log_context.get() or _NONE
        attributes = record.__dict__
        for name, value in zip(FIELDS, values, strict=True):
            given = attributes.get(name)
            entry[name] = value if given is None else given
        ids = current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        for name, value in attributes.items():
            if name not in _STANDARD and name not in entry:
                entry[name] = clean(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = clean(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = clean(record.exc_text)
        return json.dumps(entry, default=lambda value: clean(repr(value)), ensure_ascii=False)


# perdure's own records carry the fields whatever handler the application configured.
logging.getLogger("perdure").addFilter(LogContextFilter())
