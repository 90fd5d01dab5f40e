"""The coordinator's ASGI application: the HTTP API, the probes, the built-in broker endpoint,
and a lifespan that opens the store and runs the coordinator (leader election and, while leading,
the scheduling loop, the lease monitor and the worker protocol)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from niyanta.broker.factory import open_coordinator_endpoint
from niyanta.broker.memory import MemoryHub
from niyanta.broker.websocket import WebSocketEndpoint
from niyanta.clock import Clock, SystemClock
from niyanta.coordinator.api import ROUTERS
from niyanta.coordinator.api.errors import install_error_handlers
from niyanta.coordinator.runtime import CoordinatorRuntime
from niyanta.coordinator.service import CoordinatorService
from niyanta.coordinator.settings import CoordinatorSettings
from niyanta.observability.metrics import CoordinatorMetrics
from niyanta.store.base import Store, StoreLimits
from niyanta.store.factory import open_store

API_VERSION = "1"

FASTAPI_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}
"""FastAPI's own OpenTelemetry (0.165+) is off: a request span costs ~110 µs of CPU per request
(measured), more than every Niyanta span of a workload together, and tells an operator nothing
the submit span does not; Niyanta has its own metrics and logs. ``workload.submit`` is the API
span and honours an incoming ``traceparent`` header."""


def build_app(
    settings: CoordinatorSettings,
    *,
    store: Store | None = None,
    hub: MemoryHub | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The coordinator app. ``store``: an opened store to use (the caller closes it); otherwise
    ``settings.store_url`` is opened and closed with the app. ``hub``: the in-process broker
    shared with workers when ``settings.broker == "memory"``."""
    used_clock = clock or SystemClock()
    metrics = CoordinatorMetrics(settings.metrics_max_customers, enabled=settings.metrics)
    endpoint = open_coordinator_endpoint(
        settings.broker,
        hub=hub,
        coordinator_id=settings.coordinator_id,
        token=settings.worker_token,
        cluster=settings.cluster,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = store
        if opened is None:
            limits = StoreLimits(max_params_bytes=settings.max_params_bytes)
            opened = await open_store(settings.store_url, used_clock, limits)
        runtime = CoordinatorRuntime(
            settings=settings, store=opened, endpoint=endpoint, clock=used_clock, metrics=metrics
        )
        app.state.runtime = runtime
        app.state.service = CoordinatorService(runtime)
        try:
            await runtime.start()
            yield
        finally:
            await runtime.stop()
            if store is None:
                await opened.close()

    app = FastAPI(
        title="Niyanta coordinator",
        version=API_VERSION,
        description="Schedules customers' long-running workloads onto workers.",
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY_OFF,
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    if isinstance(endpoint, WebSocketEndpoint):
        app.router.routes.append(endpoint.route())
    return app
