"""Workloads for the resource isolation tests, in a module of their own so that an isolated
child imports only this (and niyanta) to find its handler."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from niyanta import Registry, WorkloadContext, workload

REGISTRY = Registry()


@workload("hog", registry=REGISTRY, isolation="process", resources={"cpu": 0.5, "memory_mb": 64})
async def hog(ctx: WorkloadContext) -> int:
    """Allocates four times its memory limit."""
    hoard = bytearray(256 * 1024 * 1024)
    return len(hoard)


@workload(
    "hog-retried",
    registry=REGISTRY,
    isolation="process",
    resources={"memory_mb": 64},
    retry={"retry_resource_errors": True, "max_attempts": 2, "initial_backoff_s": 0.05},
)
async def hog_retried(ctx: WorkloadContext) -> int:
    """``hog`` of a type that asks for resource errors to be retried."""
    return await hog(ctx)


@workload("spin", registry=REGISTRY, isolation="process", resources={"cpu": 0.5})
async def spin(ctx: WorkloadContext) -> dict[str, Any]:
    """A runaway: says it started, then burns its CPU for ``seconds`` without awaiting."""
    await ctx.report_progress(0.01)
    deadline = time.monotonic() + ctx.params["seconds"]
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    return {"cores": sorted(os.sched_getaffinity(0)), "nice": os.nice(0), "spins": spins}


@workload("ticker", registry=REGISTRY)
async def ticker(ctx: WorkloadContext) -> dict[str, float]:
    """An ordinary asyncio workload: ``ticks`` short sleeps; reports how long they took."""
    started = time.monotonic()
    for _ in range(ctx.params["ticks"]):
        await asyncio.sleep(0.01)
    return {"elapsed_s": time.monotonic() - started}


@workload("ticker-64mb", registry=REGISTRY, resources={"memory_mb": 64})
async def ticker_64mb(ctx: WorkloadContext) -> dict[str, float]:
    """``ticker`` that asks for 64 MB."""
    return await ticker(ctx)
