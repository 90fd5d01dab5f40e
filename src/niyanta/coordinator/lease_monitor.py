"""Silence detection: replicas whose lease expired (their worker stopped heartbeating) go back to
pending with a new fence token, so that they are placed again and the silent worker can write
nothing more. Also the stall watchdog: a replica that keeps its lease but whose checkpoints stop
advancing for ``stall_intervals`` checkpoint intervals of its type fails as stalled (and retries).
Lease deadlines are judged on the store's clock, never on a worker's."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from niyanta.clock import Clock
from niyanta.coordinator.catalog import Catalog
from niyanta.coordinator.stopper import Stopper
from niyanta.errors import NiyantaError
from niyanta.model import Replica
from niyanta.observability.metrics import CoordinatorMetrics
from niyanta.observability.tracing import trace_ids_of_workload
from niyanta.states import ReplicaState
from niyanta.store.base import Store

log = structlog.get_logger("niyanta.coordinator")

STALL_CHECK_EVERY = 4
"""Stall checks run on every n-th lease check (they read every active replica)."""


class LeaseMonitor:
    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        metrics: CoordinatorMetrics,
        clock: Clock,
        interval_s: float,
        lease_ttl_s: float,
        wake_scheduler: Callable[[float | None], None],
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._metrics = metrics
        self._clock = clock
        self._interval_s = interval_s
        self._lease_ttl_s = lease_ttl_s
        self._wake = wake_scheduler

    async def run(self, stopper: Stopper) -> None:
        tick = 0
        after_outage = False
        while not await stopper.pause(self._interval_s):
            tick += 1
            try:
                if after_outage:
                    # Workers could not renew while the store was away: give every lease a
                    # full TTL again before judging any of them.
                    extended = await self._store.extend_all_leases(self._lease_ttl_s)
                    log.info("leases.extended", count=extended, reason="store outage over")
                    after_outage = False
                await self.requeue_expired()
                if tick % STALL_CHECK_EVERY == 0:
                    await self.fail_stalled()
            except Exception as exc:  # a store outage: try again next tick
                if not after_outage:
                    log.warning("lease_monitor.failed", error=repr(exc))
                after_outage = True

    async def requeue_expired(self) -> list[Replica]:
        expired = await self._store.requeue_expired()
        for replica in expired:
            self._metrics.lease_expiries.inc()
            self._metrics.reassignments.labels(reason="lease expired").inc()
            workload = self._catalog.cached(replica.workload_id)
            log.warning(
                "lease.expired",
                customer=workload.customer_id if workload is not None else None,
                workload=replica.workload_id,
                replica=replica.index,
                worker=replica.previous_worker,
                fence=replica.fence,
                attempt=replica.attempt,
                **trace_ids_of_workload(workload.traceparent if workload is not None else None),
            )
        if expired:
            self._wake(None)
        return expired

    async def fail_stalled(self) -> list[Replica]:
        now = self._clock.now()
        failed = []
        for replica in await self._store.active_replicas():
            if replica.state is not ReplicaState.RUNNING:
                continue
            workload = await self._catalog.workload(replica.workload_id)
            wtype = await self._catalog.workload_type(workload.type_name, workload.type_version)
            policy = wtype.checkpoint
            if policy.stall_intervals <= 0:
                continue
            since = replica.checkpoint_at or replica.started_at or now
            if replica.checkpoint_at is not None and replica.started_at is not None:
                since = max(replica.checkpoint_at, replica.started_at)
            if now - since <= policy.interval_s * policy.stall_intervals:
                continue
            reason = f"no checkpoint for {now - since:.1f} s"
            try:
                after = await self._store.fail_stalled(replica.key, replica.fence, reason)
            except NiyantaError:
                continue  # it moved on meanwhile
            log.warning(
                "replica.stalled",
                customer=workload.customer_id,
                workload=replica.workload_id,
                replica=replica.index,
                worker=replica.worker_id,
                fence=replica.fence,
                attempt=replica.attempt,
                reason=reason,
                **trace_ids_of_workload(workload.traceparent),
            )
            failed.append(after)
            if after.state is ReplicaState.RETRYING:
                self._wake(after.not_before)
        return failed
