"""Plain data in and out of the scheduler. No I/O anywhere in ``niyanta.scheduler``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from niyanta.model import Affinity, ReplicaKey, Resources, Tier


class ScoringPolicy(StrEnum):
    SPREAD = "spread"
    """Prefer the least utilised worker."""
    BINPACK = "binpack"
    """Prefer the most utilised worker that still fits (keeps whole workers free)."""


@dataclass(frozen=True, slots=True)
class PendingReplica:
    key: ReplicaKey
    customer_id: str
    tier: str
    type_name: str
    resources: Resources
    affinity: Affinity = field(default_factory=Affinity)
    priority: int = 0
    enqueued_at: float = 0.0
    previous_worker: str | None = None
    workload_labels: Mapping[str, str] = field(default_factory=dict)
    fence: int = 0


@dataclass(frozen=True, slots=True)
class RunningReplica:
    key: ReplicaKey
    customer_id: str
    tier: str
    worker_id: str
    resources: Resources
    workload_labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    last_checkpoint_at: float | None = None
    """Newer checkpoint = cheaper to preempt (less work redone)."""
    started_at: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A worker as the scheduler sees it: its totals; what runs on it is in ``running``."""

    id: str
    labels: Mapping[str, str]
    types: frozenset[str]
    slots: int
    cpu: float = 0.0
    """0 means cpu is not accounted on this worker."""
    memory_mb: int = 0
    """0 means memory is not accounted on this worker."""
    schedulable: bool = True
    """False while draining or cordoned."""


@dataclass(frozen=True, slots=True)
class CustomerPolicy:
    id: str
    tier: str
    weight: float
    concurrency_cap: int | None


@dataclass(frozen=True, slots=True)
class TierUse:
    """Capacity one tier holds: replicas (slots), and the cpu and memory they ask for."""

    slots: int = 0
    cpu: float = 0.0
    memory_mb: float = 0.0


@dataclass(frozen=True, slots=True)
class SchedulerInput:
    pending: tuple[PendingReplica, ...]
    workers: tuple[WorkerView, ...]
    running: tuple[RunningReplica, ...]
    tiers: Mapping[str, Tier]
    customers: Mapping[str, CustomerPolicy]
    now: float
    policy: ScoringPolicy = ScoringPolicy.SPREAD
    aging_s: float = 300.0
    """Every ``aging_s`` seconds of waiting lifts a replica one tier-step (anti-starvation)."""
    lingering: Mapping[str, TierUse] = field(default_factory=dict)
    """Per tier: the guaranteed capacity it needed within its ``guarantee_linger_s``
    (``linger.lingering_use``); held against lower tiers like capacity its waiting replicas
    need, but never reclaimed by preemption."""


@dataclass(frozen=True, slots=True)
class Placement:
    key: ReplicaKey
    worker_id: str
    fence: int = 0
    """The fence of the pending replica the scheduler saw (``Assignment.expected_fence``)."""


@dataclass(frozen=True, slots=True)
class Preemption:
    victim: ReplicaKey
    worker_id: str
    for_replica: ReplicaKey


@dataclass(frozen=True, slots=True)
class PendingReason:
    key: ReplicaKey
    reason: str
    """Readable: "no worker with gpu=true", "customer acme at its cap of 20", ..."""


@dataclass(frozen=True, slots=True)
class SchedulerDecision:
    placements: tuple[Placement, ...]
    preemptions: tuple[Preemption, ...]
    pending: tuple[PendingReason, ...]
    constrained: frozenset[str] = frozenset()
    """Customers with a replica left pending by where it may run (affinity, anti-affinity,
    spread, a named worker), not for want of capacity: one further down their queue, which the
    round was not given, might have fit."""
    tier_demand: Mapping[str, TierUse] = field(default_factory=dict)
    """Per tier: what it holds once this round's placements start, plus what its replicas left
    waiting for capacity ask (``linger.observe_demand``)."""
