"""The service behind every route, taken from the application state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from niyanta.coordinator.service import CoordinatorService


async def _service(request: Request) -> CoordinatorService:
    # async: FastAPI runs a plain ``def`` dependency on its thread pool, a thread hop per request.
    service: CoordinatorService = request.app.state.service
    return service


Service = Annotated[CoordinatorService, Depends(_service)]
