"""Cached reads of what placement needs and what rarely changes: a workload's placement facts
(customer, type, params, affinity, priority, labels never change after submit), workload types
(immutable per name and version), and customers and tiers (refreshed after ``max_age_s`` or at
once when the API changes them)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from niyanta.clock import Clock
from niyanta.model import Customer, Tier, Workload, WorkloadType
from niyanta.scheduler.types import CustomerPolicy
from niyanta.store.base import Store


@dataclass(frozen=True, slots=True)
class Tenancy:
    tiers: dict[str, Tier]
    customers: dict[str, Customer]
    policies: dict[str, CustomerPolicy] = field(init=False)
    """Every customer's ``policy()``, computed once per refresh: every round and every
    arrival's placement hands them all to the scheduler."""

    def __post_init__(self) -> None:
        policies = {c.id: self.policy(c) for c in self.customers.values()}
        object.__setattr__(self, "policies", policies)

    def policy(self, customer: Customer) -> CustomerPolicy:
        tier = self.tiers.get(customer.tier)
        weight = customer.weight if customer.weight is not None else (tier.weight if tier else 1.0)
        cap = customer.concurrency_cap
        if cap is None and tier is not None:
            cap = tier.concurrency_cap
        return CustomerPolicy(customer.id, customer.tier, weight, cap)


class Catalog:
    def __init__(
        self, store: Store, clock: Clock, max_workloads: int = 100_000, max_age_s: float = 1.0
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_workloads = max_workloads
        self._max_age_s = max_age_s
        self._workloads: OrderedDict[str, Workload] = OrderedDict()
        self._types: dict[tuple[str, str], WorkloadType] = {}
        self._newest: dict[str, tuple[float, WorkloadType]] = {}
        self._tenancy: Tenancy | None = None
        self._tenancy_at = 0.0

    async def workload(self, workload_id: str) -> Workload:
        cached = self._workloads.get(workload_id)
        if cached is not None:
            self._workloads.move_to_end(workload_id)
            return cached
        workload = await self._store.get_workload(workload_id)
        self.remember(workload)
        return workload

    def cached(self, workload_id: str) -> Workload | None:
        """The workload if it is cached (for log lines and metrics; never reads the store)."""
        return self._workloads.get(workload_id)

    def customer_of(self, workload_id: str) -> str | None:
        cached = self._workloads.get(workload_id)
        return cached.customer_id if cached is not None else None

    def remember(self, workload: Workload) -> None:
        self._workloads[workload.id] = workload
        self._workloads.move_to_end(workload.id)
        while len(self._workloads) > self._max_workloads:
            self._workloads.popitem(last=False)

    async def workload_type(self, name: str, version: str) -> WorkloadType:
        cached = self._types.get((name, version))
        if cached is None:
            cached = await self._store.get_type(name, version)
            self._types[(name, version)] = cached
        return cached

    async def newest_type(self, name: str) -> WorkloadType:
        """The newest version of type ``name``, as read at most ``max_age_s`` ago (or since
        this coordinator last registered one)."""
        now = self._clock.monotonic()
        cached = self._newest.get(name)
        if cached is None or now - cached[0] > self._max_age_s:
            newest = await self._store.get_type(name)
            self._types[(name, newest.version)] = newest
            cached = self._newest[name] = (now, newest)
        return cached[1]

    def invalidate_newest_type(self, name: str) -> None:
        self._newest.pop(name, None)

    async def tenancy(self) -> Tenancy:
        now = self._clock.monotonic()
        if self._tenancy is None or now - self._tenancy_at > self._max_age_s:
            tiers = {t.name: t for t in await self._store.list_tiers()}
            customers = {c.id: c for c in await self._store.list_customers()}
            self._tenancy = Tenancy(tiers, customers)
            self._tenancy_at = now
        return self._tenancy

    def invalidate_tenancy(self) -> None:
        self._tenancy = None
