"""``/v1/workload-types``: register (runtime registration: workers that can import the
entrypoint load it without a restart) and list."""

from __future__ import annotations

from fastapi import APIRouter, Response

from niyanta.coordinator.api.deps import Service
from niyanta.coordinator.api.schemas import WorkloadTypeIn, WorkloadTypeList, WorkloadTypeOut

router = APIRouter(prefix="/v1/workload-types", tags=["workload types"])


@router.post("", status_code=201, response_model=WorkloadTypeOut)
async def register_type(
    body: WorkloadTypeIn, service: Service, response: Response
) -> WorkloadTypeOut:
    known = {(t.name, t.version) for t in await service.list_types()}
    registered = await service.register_type(body.to_model())
    if (registered.name, registered.version) in known:
        response.status_code = 200
    return WorkloadTypeOut.of(registered)


@router.get("", response_model=WorkloadTypeList)
async def list_types(service: Service) -> WorkloadTypeList:
    return WorkloadTypeList(items=[WorkloadTypeOut.of(t) for t in await service.list_types()])
