"""Per-customer concurrency caps and per-tier guaranteed capacity.

A tier guarantees slots, cpu (cores) and memory (MB). Each is *held* against lower tiers only
while the tier is below that guarantee and has replicas waiting for capacity that need it: then
lower tiers may not take the free capacity that would leave less free than the tier's shortfall
(the guarantee left unused, at most what its waiting replicas ask for), and the waiting replicas
may reclaim borrowed capacity by preemption even when their tier may not otherwise preempt.
While nobody entitled waits, lower tiers borrow freely. A tier with a ``guarantee_linger_s``
also has the guaranteed capacity it needed within that time held (``SchedulerInput.lingering``),
so that its next replica finds it free; that capacity is never reclaimed by preemption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from niyanta.model import Resources, Tier
from niyanta.scheduler import reasons
from niyanta.scheduler.types import CustomerPolicy, RunningReplica, TierUse

EPSILON = 1e-9
"""Slack for float sums of cpu and memory."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Free capacity of one resource a lower tier may not take, and the highest tier it is
    held for."""

    amount: float
    for_tier: str


@dataclass(frozen=True, slots=True)
class Holds:
    """What is held against one tier, per resource (None: nothing of it is held)."""

    slots: Hold | None
    cpu: Hold | None
    memory: Hold | None

    def refusal(
        self, resources: Resources, free_slots: int, free_cpu: float, free_memory: float
    ) -> str | None:
        """Why a replica asking ``resources`` may not take free capacity, or None."""
        if self.slots is not None and free_slots - self.slots.amount < 1:
            return reasons.held_for(self.slots.for_tier)
        if (
            self.cpu is not None
            and resources.cpu > 0
            and free_cpu - resources.cpu < self.cpu.amount - EPSILON
        ):
            return reasons.cpu_held_for(self.cpu.for_tier, self.cpu.amount)
        if (
            self.memory is not None
            and resources.memory_mb > 0
            and free_memory - resources.memory_mb < self.memory.amount - EPSILON
        ):
            return reasons.memory_held_for(self.memory.for_tier, self.memory.amount)
        return None


@dataclass(slots=True)
class Usage:
    """Replicas of one tier and the cpu and memory they ask for."""

    slots: int = 0
    cpu: float = 0.0
    memory: float = 0.0

    def add(self, resources: Resources) -> None:
        self.slots += 1
        self.cpu += resources.cpu
        self.memory += resources.memory_mb


class Quotas:
    def __init__(
        self,
        tiers: Mapping[str, Tier],
        customers: Mapping[str, CustomerPolicy],
        running: Sequence[RunningReplica],
        lingering: Mapping[str, TierUse],
    ) -> None:
        self._tiers = tiers
        self._customers = customers
        self._lingering = {name: use for name, use in lingering.items() if name in tiers}
        self.held: dict[str, int] = {}
        """Replicas each customer runs, counting this round's placements."""
        self.used: dict[str, Usage] = {}
        """What each tier runs, counting this round's placements."""
        self._waiting: dict[str, Usage] = {}
        """What each tier with a guarantee waits for (replicas left without free capacity)."""
        for replica in running:
            self.held[replica.customer_id] = self.held.get(replica.customer_id, 0) + 1
            self._usage(self.used, replica.tier).add(replica.resources)

    @staticmethod
    def _usage(table: dict[str, Usage], tier: str) -> Usage:
        usage = table.get(tier)
        if usage is None:
            usage = table[tier] = Usage()
        return usage

    def weight(self, customer: str, tier: Tier) -> float:
        policy = self._customers.get(customer)
        return tier.weight if policy is None else policy.weight

    def cap(self, customer: str, tier: Tier) -> int | None:
        policy = self._customers.get(customer)
        return tier.concurrency_cap if policy is None else policy.concurrency_cap

    def at_cap(self, customer: str, cap: int | None) -> bool:
        return cap is not None and self.held.get(customer, 0) >= cap

    def charge(self, customer: str, tier: str, resources: Resources) -> None:
        # Once per placement: kept inline (no helper calls), it is on the round's hot path.
        self.held[customer] = self.held.get(customer, 0) + 1
        used = self.used.get(tier)
        if used is None:
            used = self.used[tier] = Usage()
        used.slots += 1
        used.cpu += resources.cpu
        used.memory += resources.memory_mb

    def entitled(self, tier: Tier, resources: Resources) -> bool:
        """Below a guarantee that a replica asking ``resources`` would use: may reclaim it from
        lower tiers."""
        used = self.used.get(tier.name, Usage())
        return (
            used.slots < tier.guaranteed_slots
            or (resources.cpu > 0 and used.cpu < tier.guaranteed_cpu - EPSILON)
            or (resources.memory_mb > 0 and used.memory < tier.guaranteed_memory_mb)
        )

    def note_waiting(self, tier: Tier, resources: Resources) -> None:
        """A replica of ``tier`` asking ``resources`` found no free capacity."""
        if tier.guaranteed_slots > 0 or tier.guaranteed_cpu > 0 or tier.guaranteed_memory_mb > 0:
            self._usage(self._waiting, tier.name).add(resources)

    def tier_demand(self) -> dict[str, TierUse]:
        """Per tier: what it runs, counting this round's placements, and what its replicas
        left waiting for capacity ask."""
        demand: dict[str, TierUse] = {}
        nothing = Usage()
        for name in self.used.keys() | self._waiting.keys():
            used, waiting = self.used.get(name, nothing), self._waiting.get(name, nothing)
            demand[name] = TierUse(
                used.slots + waiting.slots, used.cpu + waiting.cpu, used.memory + waiting.memory
            )
        return demand

    def hold_against(self, tier: Tier) -> Holds | None:
        """Capacity held for higher tiers' guarantees that ``tier`` may not take, if any."""
        if not self._waiting and not self._lingering:
            return None
        held = [0.0, 0.0, 0.0]
        top: list[Tier | None] = [None, None, None]
        nothing = TierUse()
        for name in sorted(self._waiting.keys() | self._lingering.keys()):
            entitled = self._tiers[name]
            if entitled.priority <= tier.priority:
                continue
            waiting = self._waiting.get(name, Usage())
            recent = self._lingering.get(name, nothing)
            used = self.used.get(name, Usage())
            # Held: what its waiting replicas need, or the part of what it needed lately that it
            # does not use now, whichever is more; never beyond the guarantee left unused.
            shortfalls = (
                min(
                    entitled.guaranteed_slots - used.slots,
                    max(waiting.slots, recent.slots - used.slots),
                ),
                min(entitled.guaranteed_cpu - used.cpu, max(waiting.cpu, recent.cpu - used.cpu)),
                min(
                    entitled.guaranteed_memory_mb - used.memory,
                    max(waiting.memory, recent.memory_mb - used.memory),
                ),
            )
            for n, short in enumerate(shortfalls):
                if short > EPSILON:
                    held[n] += short
                    highest = top[n]
                    if highest is None or entitled.priority > highest.priority:
                        top[n] = entitled
        slots, cpu, memory = (
            None if t is None else Hold(amount, t.name) for amount, t in zip(held, top, strict=True)
        )
        if slots is None and cpu is None and memory is None:
            return None
        return Holds(slots, cpu, memory)
