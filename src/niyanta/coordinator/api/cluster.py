"""``/v1/cluster`` and the probes: ``/health`` (the process answers), ``/ready`` (the store
answers and its migrations are applied; on the leader, the broker is connected), ``/metrics``
(Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from niyanta.coordinator.api.deps import Service
from niyanta.coordinator.api.errors import error_response
from niyanta.coordinator.api.schemas import ClusterOut, HealthOut, ReadyOut
from niyanta.observability.metrics import CoordinatorMetrics

router = APIRouter(tags=["cluster"])


@router.get("/v1/cluster", response_model=ClusterOut)
async def cluster(service: Service) -> ClusterOut:
    """Every coordinator, which one leads, and its term; the same from any coordinator."""
    return ClusterOut.of(await service.cluster())


@router.get("/health", response_model=HealthOut)
async def health(service: Service) -> HealthOut:
    return HealthOut(status="ok", coordinator_id=service.coordinator_id, leader=service.is_leader)


@router.get("/ready", response_model=ReadyOut, responses={503: {"description": "not ready"}})
async def ready(service: Service) -> ReadyOut | JSONResponse:
    problem = await service.ready()
    if problem is not None:
        return error_response(503, "not_ready", problem)
    return ReadyOut(ready=True, coordinator_id=service.coordinator_id, leader=service.is_leader)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry: CoordinatorMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)
