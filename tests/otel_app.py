"""The app that tests/test_observability_crash.py runs in worker subprocesses.

Run as ``perdure worker otel_app:app`` with ``tests/`` importable, the database from
``PERDURE_DATABASE_URL``. When ``PERDURE_SPANS`` names a file, the module sets the
global tracer provider (as an application would) with an exporter that appends each
finished span to that file as one JSON line (one ``os.write`` on an ``O_APPEND``
descriptor), with the PID of the process that exported it: a killed worker's spans
that ended before the kill are in the file. The ``ship`` step writes
``ship-<pid>`` in ``PERDURE_MARKERS`` and waits there until a file ``release``
appears. The test process imports this module by path (``PERDURE_SPANS`` unset) and
calls ``build_app`` for a client app on its own database.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import perdure

log = logging.getLogger("shop")


class FileExporter(SpanExporter):
    """Appends each span to a file as one JSON line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(self._entry(span)) + "\n" for span in spans)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    @staticmethod
    def _entry(span: ReadableSpan) -> dict[str, object]:
        assert span.context is not None
        return {
            "name": span.name,
            "pid": os.getpid(),
            "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
            "parent_id": None if span.parent is None else format(span.parent.span_id, "016x"),
            "attributes": dict(span.attributes or {}),
        }


def build_app(database_url: str | None = None) -> perdure.App:
    """The app with the ``order`` workflow on ``database_url`` (default:
    ``PERDURE_DATABASE_URL``)."""
    app = perdure.App(database_url, poll_interval=0.05, lease_seconds=15.0)

    @app.step(name="prepare")
    def prepare(order: str) -> str:
        log.info("preparing %s", order)
        return f"prepared {order}"

    @app.step(name="ship")
    def ship(order: str) -> str:
        log.info("shipping %s", order)
        markers = Path(os.environ["PERDURE_MARKERS"])
        (markers / f"ship-{os.getpid()}").write_text(order)
        while not (markers / "release").exists():
            time.sleep(0.02)
        return f"shipped {order}"

    @app.workflow(name="order")
    def order(order: str) -> list[str]:
        return [prepare(order), ship(order)]

    return app


if os.environ.get("PERDURE_SPANS"):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["PERDURE_SPANS"])))
    trace.set_tracer_provider(provider)

app = build_app()
