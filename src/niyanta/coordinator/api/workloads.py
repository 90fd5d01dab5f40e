"""``/v1/workloads``: submit (idempotent), get, list (filters, cursor pagination), cancel, pause,
resume, events, latest checkpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from niyanta.coordinator.api.deps import Service
from niyanta.coordinator.api.leader_forward import leader_answer
from niyanta.coordinator.api.schemas import (
    CheckpointOut,
    ErrorDetail,
    EventList,
    EventOut,
    SubmitBatchIn,
    SubmitBatchOut,
    SubmitIn,
    SubmitItemOut,
    WorkloadOut,
    WorkloadPageOut,
)
from niyanta.errors import InvalidInput, NiyantaError, NotFound, NotLeader
from niyanta.states import ReplicaState
from niyanta.store.base import WorkloadFilter

router = APIRouter(prefix="/v1/workloads", tags=["workloads"])


@router.post(
    "",
    status_code=201,
    response_model=WorkloadOut,
    responses={200: {"description": "an existing workload with this idempotency key"}},
)
async def submit(
    body: SubmitIn,
    service: Service,
    response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    traceparent: Annotated[str | None, Header(max_length=256)] = None,
) -> WorkloadOut:
    """201 when created; 200 with the existing workload for a known idempotency key (from the
    ``Idempotency-Key`` header or the body field); 409 for that key with a different payload.
    A W3C ``traceparent`` header makes the workload's trace a child of the caller's."""
    key = body.idempotency_key
    if idempotency_key is not None:
        if key is not None and key != idempotency_key:
            raise InvalidInput("the Idempotency-Key header and the body's idempotency_key differ")
        key = idempotency_key
    result, view = await service.submit(body.to_spec(key, traceparent))
    if not result.created:
        response.status_code = 200
    return WorkloadOut.of(view)


@router.post(":batch", response_model=SubmitBatchOut)
async def submit_batch(
    body: SubmitBatchIn,
    service: Service,
    traceparent: Annotated[str | None, Header(max_length=256)] = None,
) -> SubmitBatchOut:
    """Up to 1,000 submits in one store transaction, each judged alone: per item, in order, the
    status ``POST /v1/workloads`` would answer with (201, or 200 for a known idempotency key)
    and the workload id, or the 4xx status and error that refused it. Each item's idempotency
    key is its ``idempotency_key`` field. A W3C ``traceparent`` header makes the batch's trace
    (every workload's) a child of the caller's."""
    specs = [item.to_spec(item.idempotency_key) for item in body.items]
    results = await service.submit_many(specs, traceparent)
    items = []
    for r in results:
        if isinstance(r, NiyantaError):
            error = ErrorDetail(code=r.code, message=r.message)
            items.append(SubmitItemOut(status=r.http_status, error=error))
        else:
            items.append(SubmitItemOut(status=201 if r.created else 200, id=r.workload.id))
    return SubmitBatchOut(items=items)


@router.get("", response_model=WorkloadPageOut)
async def list_workloads(
    service: Service,
    customer: str | None = None,
    state: ReplicaState | None = None,
    type: Annotated[str | None, Query(alias="type")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: str | None = None,
) -> WorkloadPageOut:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    query = WorkloadFilter(
        customer_id=customer, state=state, type_name=type, limit=limit, cursor=cursor
    )
    views, next_cursor = await service.list_workloads(query)
    return WorkloadPageOut(items=[WorkloadOut.of(v) for v in views], next_cursor=next_cursor)


@router.get("/{workload_id}", response_model=WorkloadOut)
async def get_workload(workload_id: str, service: Service) -> WorkloadOut:
    return WorkloadOut.of(await service.get_workload(workload_id))


@router.post("/{workload_id}/cancel", response_model=WorkloadOut)
async def cancel(workload_id: str, request: Request, service: Service) -> WorkloadOut | Response:
    """Through a follower: the leader cancels (and stops the running replicas at once). With no
    leader reachable, the follower cancels in the store: the new fence tokens stop the running
    replicas at their next heartbeat to whichever coordinator leads."""
    try:
        if (answer := await leader_answer(request, service)) is not None:
            return answer
    except NotLeader:
        pass
    return WorkloadOut.of(await service.cancel(workload_id))


@router.post("/{workload_id}/pause", response_model=WorkloadOut)
async def pause(workload_id: str, request: Request, service: Service) -> WorkloadOut | Response:
    """Through a follower: the leader pauses (only it can ask running replicas to checkpoint
    and yield)."""
    if (answer := await leader_answer(request, service)) is not None:
        return answer
    return WorkloadOut.of(await service.pause(workload_id))


@router.post("/{workload_id}/resume", response_model=WorkloadOut)
async def resume(workload_id: str, service: Service) -> WorkloadOut:
    return WorkloadOut.of(await service.resume(workload_id))


@router.get("/{workload_id}/events", response_model=EventList)
async def events(
    workload_id: str,
    service: Service,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> EventList:
    """Its event log, oldest first; ``after`` is the last event id already seen."""
    found = await service.events(workload_id, after, limit)
    return EventList(items=[EventOut.of(e) for e in found])


@router.get("/{workload_id}/checkpoint", response_model=CheckpointOut)
async def latest_checkpoint(
    workload_id: str, service: Service, replica: Annotated[int, Query(ge=0)] = 0
) -> CheckpointOut:
    checkpoint = await service.latest_checkpoint(workload_id, replica)
    if checkpoint is None:
        raise NotFound(f"replica {workload_id}/{replica} has no checkpoint yet")
    return CheckpointOut.of(checkpoint)
