"""The coordinator's ASGI application: the HTTP API, the probes, the built-in broker endpoint,
and a lifespan that opens the store and runs the coordinator (leader election and, while leading,
the scheduling loop, the lease monitor and the worker protocol)."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

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

UNTRACED_PATHS = frozenset({"/health", "/ready", "/metrics", "/v1/broker"})
"""Requests FastAPI does not trace: probes and scrapes (a trace every few seconds, about
nothing) and the broker's WebSocket (a span as long as the connection, which every message
handled on it would otherwise inherit)."""


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED_PATHS


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
        # With an OpenTelemetry SDK installed FastAPI traces requests itself: the request span
        # is then the root of a submit's trace. Its per-dependency and serialization spans add
        # cost and nothing an operator of Niyanta needs.
        telemetry={"operation_spans": False, "exclude": _untraced},
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    if isinstance(endpoint, WebSocketEndpoint):
        app.router.routes.append(endpoint.route())
    return app
