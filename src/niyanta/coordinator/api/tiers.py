"""``/v1/tiers``: the tier configuration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from niyanta.coordinator.api.deps import Service
from niyanta.coordinator.api.schemas import NAME_PATTERN, TierIn, TierList, TierOut

router = APIRouter(prefix="/v1/tiers", tags=["tiers"])


@router.get("", response_model=TierList)
async def list_tiers(service: Service) -> TierList:
    return TierList(items=[TierOut.of(t) for t in await service.list_tiers()])


@router.put("/{name}", response_model=TierOut)
async def put_tier(
    name: Annotated[str, Path(min_length=1, max_length=100, pattern=NAME_PATTERN)],
    body: TierIn,
    service: Service,
) -> TierOut:
    return TierOut.of(await service.put_tier(body.to_model(name)))
