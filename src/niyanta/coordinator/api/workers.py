"""``/v1/workers``: the workers connected to the leader, and drain."""

from __future__ import annotations

from fastapi import APIRouter

from niyanta.coordinator.api.deps import Service
from niyanta.coordinator.api.schemas import WorkerList, WorkerOut

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", response_model=WorkerList)
async def list_workers(service: Service) -> WorkerList:
    return WorkerList(items=[WorkerOut.of(w) for w in service.list_workers()])


@router.post("/{worker_id}/drain", response_model=WorkerOut)
async def drain(worker_id: str, service: Service) -> WorkerOut:
    """The worker checkpoints its replicas, hands them back and leaves; no lease wait."""
    return WorkerOut.of(await service.drain_worker(worker_id))
