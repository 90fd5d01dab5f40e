"""The coordinator's HTTP API: one router per resource."""

from __future__ import annotations

from fastapi import APIRouter

from niyanta.coordinator.api import (
    autoscale,
    cluster,
    customers,
    tiers,
    workers,
    workload_types,
    workloads,
)

ROUTERS: tuple[APIRouter, ...] = (
    workload_types.router,
    tiers.router,
    customers.router,
    workloads.router,
    autoscale.router,
    workers.router,
    cluster.router,
)
