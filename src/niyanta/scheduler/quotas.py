"""Per-customer concurrency caps and per-tier guaranteed capacity.

A tier's guaranteed slots are *held* against lower tiers only while the tier is below its
guarantee and has replicas waiting for capacity: then lower tiers may not take the last free
slots, and the waiting replicas may reclaim borrowed slots by preemption even when their tier
may not otherwise preempt. While nobody entitled waits, lower tiers borrow freely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from niyanta.model import Tier
from niyanta.scheduler.types import CustomerPolicy, RunningReplica


@dataclass(frozen=True, slots=True)
class Hold:
    """Free slots a lower tier may not take, and the tier they are held for."""

    slots: int
    for_tier: str


class Quotas:
    def __init__(
        self,
        tiers: Mapping[str, Tier],
        customers: Mapping[str, CustomerPolicy],
        running: Sequence[RunningReplica],
    ) -> None:
        self._tiers = tiers
        self._customers = customers
        self.held: dict[str, int] = {}
        """Replicas each customer runs, counting this round's placements."""
        self.used: dict[str, int] = {}
        """Replicas each tier runs, counting this round's placements."""
        self._waiting: dict[str, int] = {}
        for replica in running:
            self.held[replica.customer_id] = self.held.get(replica.customer_id, 0) + 1
            self.used[replica.tier] = self.used.get(replica.tier, 0) + 1

    def weight(self, customer: str, tier: Tier) -> float:
        policy = self._customers.get(customer)
        return tier.weight if policy is None else policy.weight

    def cap(self, customer: str, tier: Tier) -> int | None:
        policy = self._customers.get(customer)
        return tier.concurrency_cap if policy is None else policy.concurrency_cap

    def at_cap(self, customer: str, cap: int | None) -> bool:
        return cap is not None and self.held.get(customer, 0) >= cap

    def charge(self, customer: str, tier: str) -> None:
        self.held[customer] = self.held.get(customer, 0) + 1
        self.used[tier] = self.used.get(tier, 0) + 1

    def entitled(self, tier: Tier) -> bool:
        """Below its guaranteed slots: may reclaim them from lower tiers."""
        return self.used.get(tier.name, 0) < tier.guaranteed_slots

    def note_waiting(self, tier: Tier) -> None:
        """A replica of ``tier`` found no free capacity."""
        if tier.guaranteed_slots > 0:
            self._waiting[tier.name] = self._waiting.get(tier.name, 0) + 1

    def hold_against(self, tier: Tier) -> Hold | None:
        """Slots held for higher tiers' guarantees that ``tier`` may not take, if any."""
        if not self._waiting:
            return None
        slots, for_tier, for_priority = 0, "", -1
        for name, waiting in self._waiting.items():
            entitled = self._tiers[name]
            if entitled.priority <= tier.priority:
                continue
            short = min(entitled.guaranteed_slots - self.used.get(name, 0), waiting)
            if short > 0:
                slots += short
                if entitled.priority > for_priority:
                    for_tier, for_priority = name, entitled.priority
        return Hold(slots, for_tier) if slots else None
