"""``/v1/workers``: the workers connected to the leader, and drain. A follower answers with the
leader's answer (``leader_forward``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from niyanta.coordinator.api.deps import Service
from niyanta.coordinator.api.leader_forward import leader_answer
from niyanta.coordinator.api.schemas import WorkerList, WorkerOut

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", response_model=WorkerList)
async def list_workers(request: Request, service: Service) -> WorkerList | Response:
    if (answer := await leader_answer(request, service)) is not None:
        return answer
    return WorkerList(items=[WorkerOut.of(w) for w in service.list_workers()])


@router.post("/{worker_id}/drain", response_model=WorkerOut)
async def drain(worker_id: str, request: Request, service: Service) -> WorkerOut | Response:
    """The worker checkpoints its replicas, hands them back and leaves; no lease wait."""
    if (answer := await leader_answer(request, service)) is not None:
        return answer
    return WorkerOut.of(await service.drain_worker(worker_id))
