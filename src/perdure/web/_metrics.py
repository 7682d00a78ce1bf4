"""``GET /metrics``: perdure's metrics in the Prometheus text format (``perdure[otel]``).

perdure records its metrics through OpenTelemetry's metrics API (``_telemetry``). When the
application configured a meter provider (``opentelemetry.metrics.set_meter_provider`` or
``perdure.observability.configure``), perdure's metrics go there, and this endpoint
serves ``prometheus_client``'s default registry, where the application's
``PrometheusMetricReader()`` puts them. When it configured none, the first
``create_app`` makes perdure a meter provider of its own with a Prometheus reader on a
registry of its own (once per process: metrics are the process's), which this endpoint
serves as well. Either way the gauges of suspended workflows and circuit breakers read
the app's database, at most every few seconds (``_gauges``).

The endpoint sits behind the API's guard: with a token, a scraper sends it as a bearer
token (Prometheus ``authorization: {credentials: ...}``); without one, only this machine
may scrape.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Response

from .._app import App
from .._errors import PerdureError
from .._gauges import StoreGauges
from .._telemetry import meter_provider, use_meter_provider, watch
from ..storage import Store

try:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
except ImportError:  # without perdure[otel], /metrics says what to install
    AVAILABLE = False
else:
    AVAILABLE = True

_lock = threading.Lock()
#: The meter provider perdure made for itself (none was configured) and its registry.
_own: list[tuple[Any, Any]] = []


def _own_registry() -> Any:
    """The registry of perdure's own meter provider while perdure uses it; None while it
    uses the application's. Makes (once) and uses its own when none is configured."""
    with _lock:
        if meter_provider() is None:
            if not _own:
                registry = CollectorRegistry()
                reader = PrometheusMetricReader(registry=registry)
                _own.append((MeterProvider(metric_readers=[reader]), registry))
            use_meter_provider(_own[0][0])
        in_use = meter_provider()
        return next((registry for provider, registry in _own if provider is in_use), None)


def _opened(app: App) -> Store | None:
    """The app's store, opened if it can be (None during an outage)."""
    try:
        return app.store
    except PerdureError:
        return None


def metrics_router(app: App) -> APIRouter:
    """The router of ``GET /metrics`` for ``app`` (its gauges read ``app``'s database)."""
    router = APIRouter()
    if not AVAILABLE:

        @router.get("/metrics", include_in_schema=False)
        def missing() -> Response:
            """Say what to install."""
            text = "metrics need the otel extra: pip install 'perdure[otel]'\n"
            return Response(text, status_code=501, media_type="text/plain")

        return router

    gauges = StoreGauges(app.database_url, lambda: app.client.opened_store, app.clock.time)
    watch(gauges)
    _own_registry()  # in place before this process's workflows record anything

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """perdure's metrics (and the process's), in the Prometheus text format."""
        # The gauges read the store only while it is open: a scrape opens it, as any
        # request does. The router holds them (watching is weak, and idempotent).
        _opened(app)
        watch(gauges)
        own = _own_registry()
        body = generate_latest(REGISTRY)
        if own is not None:
            body += generate_latest(own)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
