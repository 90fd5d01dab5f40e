"""``/v1/customers``: create, list, get, update (tier, quotas, alert thresholds)."""

from __future__ import annotations

from fastapi import APIRouter

from niyanta.coordinator.api.deps import Service
from niyanta.coordinator.api.schemas import CustomerIn, CustomerList, CustomerOut, CustomerPatch
from niyanta.store.base import CustomerUpdate

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.post("", status_code=201, response_model=CustomerOut)
async def create_customer(body: CustomerIn, service: Service) -> CustomerOut:
    return CustomerOut.of(await service.create_customer(body.to_model()))


@router.get("", response_model=CustomerList)
async def list_customers(service: Service) -> CustomerList:
    return CustomerList(items=[CustomerOut.of(c) for c in await service.list_customers()])


@router.get("/{customer_id}", response_model=CustomerOut)
async def get_customer(customer_id: str, service: Service) -> CustomerOut:
    return CustomerOut.of(await service.get_customer(customer_id))


@router.patch("/{customer_id}", response_model=CustomerOut)
async def update_customer(customer_id: str, body: CustomerPatch, service: Service) -> CustomerOut:
    fields = body.model_dump(exclude_unset=True)
    update = CustomerUpdate(
        tier=body.tier,
        name=body.name,
        weight=body.weight,
        concurrency_cap=body.concurrency_cap,
        # An explicit null removes the customer's own cap (the tier's applies again).
        clear_concurrency_cap="concurrency_cap" in fields and body.concurrency_cap is None,
        alert_thresholds=body.alert_thresholds,
    )
    return CustomerOut.of(await service.update_customer(customer_id, update))
