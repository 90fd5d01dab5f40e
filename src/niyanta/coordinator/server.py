"""Run a coordinator with uvicorn (``niyanta coordinator``)."""

from __future__ import annotations

import uvicorn

from niyanta import event_loop
from niyanta.broker.websocket import uvicorn_ws_options
from niyanta.coordinator.app import build_app
from niyanta.coordinator.settings import CoordinatorSettings


def server_for(settings: CoordinatorSettings) -> uvicorn.Server:
    """A uvicorn server for the coordinator app; ``await server.serve()`` runs it until it is
    told to exit (SIGINT/SIGTERM, or ``server.should_exit = True``)."""
    config = uvicorn.Config(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        access_log=False,
        **uvicorn_ws_options(),  # type: ignore[arg-type]
    )
    return uvicorn.Server(config)


async def serve_coordinator(settings: CoordinatorSettings) -> None:
    await server_for(settings).serve()


def run_coordinator(settings: CoordinatorSettings) -> None:
    """Serve until SIGINT/SIGTERM; on the way out the coordinator resigns its leadership."""
    event_loop.run(serve_coordinator(settings))
