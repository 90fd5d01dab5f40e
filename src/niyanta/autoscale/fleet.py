"""Desired worker count per pool, as a pure function of demand.

A pool is the set of workers sharing a ``pool`` label (``default`` when absent). Demand is the
slots in use plus the slots pending replicas ask for, where a pending replica counts against the
pool its hard affinity names (``pool=x``), else against ``default``. The answer is what an HPA,
KEDA or an EC2 Auto Scaling group should run; the coordinator publishes it as a metric and a
``FleetScaler`` may act on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from niyanta.model import Affinity, SelectorOp

POOL_LABEL = "pool"
DEFAULT_POOL = "default"


@dataclass(frozen=True, slots=True)
class PoolBounds:
    min_workers: int = 0
    max_workers: int = 100
    slots_per_worker: int = 4
    """Used for a pool with no live worker to learn the slot count from."""


@dataclass(frozen=True, slots=True)
class PoolState:
    workers: int
    slots: int
    used_slots: int


def pool_of_labels(labels: Mapping[str, str]) -> str:
    return labels.get(POOL_LABEL, DEFAULT_POOL)


def pool_of_affinity(affinity: Affinity) -> str:
    for selector in affinity.required:
        single_pool = selector.op in (SelectorOp.EQ, SelectorOp.IN) and len(selector.values) == 1
        if selector.key == POOL_LABEL and single_pool:
            return selector.values[0]
    return DEFAULT_POOL


def desired_workers(
    pools: Mapping[str, PoolState],
    pending_by_pool: Mapping[str, int],
    bounds: Mapping[str, PoolBounds],
) -> dict[str, int]:
    """Workers each pool needs so that every running and pending replica has a slot."""
    names: Iterable[str] = sorted(set(pools) | set(pending_by_pool) | set(bounds))
    result: dict[str, int] = {}
    for name in names:
        state = pools.get(name, PoolState(0, 0, 0))
        bound = bounds.get(name, PoolBounds())
        per_worker = (
            state.slots / state.workers if state.workers and state.slots else bound.slots_per_worker
        )
        demand = state.used_slots + pending_by_pool.get(name, 0)
        needed = math.ceil(demand / per_worker) if per_worker > 0 else 0
        result[name] = max(bound.min_workers, min(bound.max_workers, needed))
    return result
