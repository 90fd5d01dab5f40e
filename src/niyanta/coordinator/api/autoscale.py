"""``/v1/autoscale``: autoscaling policies per customer and workload type."""

from __future__ import annotations

from fastapi import APIRouter, Response

from niyanta.coordinator.api.deps import Service
from niyanta.coordinator.api.schemas import AutoscaleIn, AutoscaleList, AutoscaleOut

router = APIRouter(prefix="/v1/autoscale", tags=["autoscaling"])


@router.get("", response_model=AutoscaleList)
async def list_policies(service: Service) -> AutoscaleList:
    return AutoscaleList(
        items=[AutoscaleOut.of(p) for p in await service.list_autoscale_policies()]
    )


@router.get("/{customer_id}/{type_name}", response_model=AutoscaleOut)
async def get_policy(customer_id: str, type_name: str, service: Service) -> AutoscaleOut:
    return AutoscaleOut.of(await service.get_autoscale_policy(customer_id, type_name))


@router.put("/{customer_id}/{type_name}", response_model=AutoscaleOut)
async def put_policy(
    customer_id: str, type_name: str, body: AutoscaleIn, service: Service
) -> AutoscaleOut:
    policy = body.to_model(customer_id, type_name)
    return AutoscaleOut.of(await service.put_autoscale_policy(policy))


@router.delete("/{customer_id}/{type_name}", status_code=204)
async def delete_policy(customer_id: str, type_name: str, service: Service) -> Response:
    await service.delete_autoscale_policy(customer_id, type_name)
    return Response(status_code=204)
