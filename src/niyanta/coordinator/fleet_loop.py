"""The leader's fleet sizing: desired workers per pool, published and optionally acted on.

Every interval it takes the pools of the connected workers (their ``pool`` label, slots and
slots in use) and the pending replicas (counted against the pool their hard affinity names),
asks the pure ``desired_workers`` for each pool's size, and sets
``niyanta_fleet_desired_workers{pool=...}`` for an HPA or KEDA to follow. With a ``FleetScaler``
configured (Kubernetes Deployments or EC2 Auto Scaling groups, off by default) it also sets each
configured pool's size itself when it differs from the desired one.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from niyanta.autoscale.fleet import (
    PoolBounds,
    PoolState,
    desired_workers,
    pool_of_affinity,
    pool_of_labels,
)
from niyanta.autoscale.fleet_scaler import FleetScaler
from niyanta.coordinator.catalog import Catalog
from niyanta.coordinator.settings import CoordinatorSettings
from niyanta.coordinator.stopper import Stopper
from niyanta.coordinator.worker_registry import WorkerRegistry
from niyanta.observability.metrics import CoordinatorMetrics
from niyanta.store.base import Store

log = structlog.get_logger("niyanta.coordinator")

ERROR_PAUSE_S = 1.0


def fleet_scaler_from(settings: CoordinatorSettings) -> FleetScaler | None:
    """The scaler the settings name (``none``: only the metric is published)."""
    pools = settings.fleet_pools
    match settings.fleet_scaler:
        case "kubernetes":
            from niyanta.autoscale.kubernetes import KubernetesDeploymentScaler

            if settings.kubernetes_api_url is None:
                return KubernetesDeploymentScaler.in_cluster(pools)
            token_file = settings.kubernetes_token_file
            return KubernetesDeploymentScaler(
                settings.kubernetes_api_url,
                settings.kubernetes_namespace,
                pools,
                token=Path(token_file).read_text().strip() if token_file else None,
                ca_file=settings.kubernetes_ca_file,
            )
        case "ec2":
            from niyanta.autoscale.ec2 import Ec2AutoScalingGroupScaler

            return Ec2AutoScalingGroupScaler(pools)
        case _:
            return None


class FleetLoop:
    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        registry: WorkerRegistry,
        metrics: CoordinatorMetrics,
        bounds: PoolBounds,
        interval_s: float,
        scaler: FleetScaler | None = None,
        scaled_pools: frozenset[str] = frozenset(),
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._registry = registry
        self._metrics = metrics
        self._bounds = bounds
        self._interval_s = interval_s
        self._scaler = scaler
        self._scaled_pools = scaled_pools
        self._published: set[str] = set()

    async def run(self, stopper: Stopper) -> None:
        await stopper.repeat(
            self.tick,
            interval_s=self._interval_s,
            error_pause_s=ERROR_PAUSE_S,
            failure_event="fleet.tick_failed",
        )

    async def tick(self) -> dict[str, int]:
        """Desired workers per pool, published (and handed to the scaler)."""
        pools: dict[str, PoolState] = {}
        for worker in self._registry.snapshot():
            name = pool_of_labels(worker.labels)
            state = pools.get(name, PoolState(0, 0, 0))
            used = max(0, worker.capacity.slots - worker.free.slots)
            pools[name] = PoolState(
                state.workers + 1, state.slots + worker.capacity.slots, state.used_slots + used
            )
        pending: dict[str, int] = {}
        for replica in await self._store.pending_replicas():
            workload = await self._catalog.workload(replica.workload_id)
            name = pool_of_affinity(workload.affinity)
            pending[name] = pending.get(name, 0) + 1
        bounds = {name: self._bounds for name in {*pools, *pending, *self._scaled_pools}}
        desired = desired_workers(pools, pending, bounds)
        for name in self._published - set(desired):
            self._metrics.fleet_desired_workers.remove(name)
        for name, workers in desired.items():
            self._metrics.fleet_desired_workers.labels(pool=name).set(workers)
        self._published = set(desired)
        if self._scaler is not None:
            await self._scale(self._scaler, desired)
        return desired

    async def _scale(self, scaler: FleetScaler, desired: dict[str, int]) -> None:
        for name in sorted(self._scaled_pools):
            workers = desired.get(name, self._bounds.min_workers)
            try:
                current = await scaler.current(name)
                if current != workers:
                    await scaler.scale(name, workers)
                    log.info("fleet.scaled", pool=name, workers_from=current, workers_to=workers)
            except Exception as exc:  # the cloud API failed: the next tick tries again
                log.warning("fleet.scale_failed", pool=name, error=repr(exc))
