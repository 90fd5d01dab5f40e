"""The service behind every route, taken from the application state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from niyanta.coordinator.service import CoordinatorService


def _service(request: Request) -> CoordinatorService:
    service: CoordinatorService = request.app.state.service
    return service


Service = Annotated[CoordinatorService, Depends(_service)]
