"""Leader election through the store's leader lease.

Every coordinator renews its presence and tries to take or renew the lease every third of its TTL.
The leader runs the loops and talks to workers; followers serve the API. Correctness never rests
on there being one leader (every write is fenced in the store); leadership only keeps the work in
one place. So a leader that cannot reach the store keeps leading until the store says otherwise,
and a coordinator that gains leadership, or reaches the store again after an outage, extends every
active lease first: replicas are not expired en masse for an outage that was not theirs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from niyanta.clock import Clock
from niyanta.coordinator.settings import CoordinatorSettings
from niyanta.coordinator.stopper import Stopper
from niyanta.model import CoordinatorInfo
from niyanta.observability.metrics import CoordinatorMetrics
from niyanta.store.base import Store

log = structlog.get_logger("niyanta.coordinator")

LEADER_LEASE = "coordinator"


class LeaderElection:
    def __init__(
        self,
        *,
        settings: CoordinatorSettings,
        store: Store,
        metrics: CoordinatorMetrics,
        clock: Clock,
        on_gained: Callable[[int], Awaitable[None]],
        on_lost: Callable[[], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._term = 0
        self._store_lost = False

    @property
    def is_leader(self) -> bool:
        return self._term > 0

    @property
    def term(self) -> int:
        return self._term

    async def run(self, stopper: Stopper) -> None:
        while not await stopper.pause(self._settings.leader_ttl_s / 3):
            await self.tick()

    async def tick(self) -> None:
        settings = self._settings
        try:
            await self._store.heartbeat_coordinator(
                CoordinatorInfo(settings.coordinator_id, settings.url, self._clock.now())
            )
            lease = await self._store.acquire_leadership(
                LEADER_LEASE, settings.coordinator_id, settings.leader_ttl_s
            )
            if lease is not None and (not self.is_leader or self._store_lost):
                extended = await self._store.extend_all_leases(settings.lease_ttl_s)
                log.info("leases.extended", count=extended, term=lease.term)
        except Exception as exc:  # the store is unreachable: keep the current role
            if not self._store_lost:
                log.warning("leader.store_unreachable", error=repr(exc), leader=self.is_leader)
            self._store_lost = True
            return
        self._store_lost = False
        if lease is None:
            if self.is_leader:
                log.warning("leader.lost", coordinator=settings.coordinator_id, term=self._term)
                self._term = 0
                self._metrics.is_leader.set(0)
                self._metrics.leader_term.set(0)
                await self._on_lost()
            return
        if not self.is_leader or lease.term != self._term:
            gained = not self.is_leader
            self._term = lease.term
            self._metrics.is_leader.set(1)
            self._metrics.leader_term.set(lease.term)
            if gained:
                self._metrics.leader_changes.inc()
                log.info("leader.gained", coordinator=settings.coordinator_id, term=lease.term)
                await self._on_gained(lease.term)

    async def resign(self) -> None:
        if not self.is_leader:
            return
        term, self._term = self._term, 0
        try:
            await self._store.resign_leadership(LEADER_LEASE, self._settings.coordinator_id, term)
        except Exception as exc:
            log.warning("leader.resign_failed", error=repr(exc))
