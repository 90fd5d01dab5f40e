"""The domain model: frozen dataclasses shared by every part.

Times are float seconds since the epoch (``Clock.now()``); a replica is addressed by
``ReplicaKey(workload_id, index)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from niyanta.states import ReplicaState

JSON = Any
"""A value that round-trips through JSON."""


class Mode(StrEnum):
    BATCH = "batch"
    CONTINUOUS = "continuous"


class Isolation(StrEnum):
    ASYNC = "async"
    PROCESS = "process"


class ErrorClass(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    FENCED = "fenced"
    TIMEOUT = "timeout"
    STALLED = "stalled"
    RESOURCE = "resource"
    """Exceeded a resource limit (memory in process isolation)."""


class ReplicaKey(NamedTuple):
    workload_id: str
    # "index" is the domain's word for a replica's position; it shadows tuple.index, which
    # nothing in Niyanta calls.
    index: int  # type: ignore[assignment]

    def __str__(self) -> str:
        return f"{self.workload_id}/{self.index}"


@dataclass(frozen=True, slots=True)
class SloTargets:
    queue_wait_p95_s: float | None = None
    run_time_p95_s: float | None = None
    error_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    priority: int
    """Higher is served first."""
    weight: float = 1.0
    """Default fair-share weight of a customer on this tier."""
    guaranteed_slots: int = 0
    """Slots lower tiers may borrow only while nobody entitled waits."""
    guaranteed_cpu: float = 0.0
    """Cores lower tiers may borrow only while nobody entitled waits for cpu."""
    guaranteed_memory_mb: int = 0
    """Memory (MB) lower tiers may borrow only while nobody entitled waits for memory."""
    guarantee_linger_s: float = 0.0
    """How long the guaranteed capacity the tier last used stays held for it after its replicas
    end, so that its next arrival finds it free instead of reclaiming it by preemption."""
    concurrency_cap: int | None = None
    """Per-customer cap on running replicas; None is no cap."""
    may_preempt: bool = False
    slo: SloTargets = field(default_factory=SloTargets)


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier(
        "platinum",
        400,
        weight=8.0,
        guaranteed_slots=4,
        guarantee_linger_s=1.0,
        concurrency_cap=None,
        may_preempt=True,
        slo=SloTargets(queue_wait_p95_s=2.0, run_time_p95_s=600.0, error_rate=0.01),
    ),
    Tier(
        "gold",
        300,
        weight=4.0,
        guaranteed_slots=2,
        guarantee_linger_s=0.5,
        concurrency_cap=200,
        may_preempt=True,
        slo=SloTargets(queue_wait_p95_s=10.0, run_time_p95_s=1200.0, error_rate=0.02),
    ),
    Tier(
        "silver",
        200,
        weight=2.0,
        guaranteed_slots=0,
        concurrency_cap=50,
        slo=SloTargets(queue_wait_p95_s=60.0, error_rate=0.05),
    ),
    Tier(
        "bronze",
        100,
        weight=1.0,
        guaranteed_slots=0,
        concurrency_cap=20,
        slo=SloTargets(queue_wait_p95_s=600.0, error_rate=0.1),
    ),
)


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    tier: str
    name: str = ""
    weight: float | None = None
    """Overrides the tier's fair-share weight."""
    concurrency_cap: int | None = None
    """Overrides the tier's per-customer cap."""
    alert_thresholds: Mapping[str, float] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: float = 0.0
    memory_mb: int = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2
    """Fraction of the backoff added or removed at random."""
    retry_resource_errors: bool = False
    """Retry a replica that exceeded a resource limit (error class ``resource``) like a
    transient failure; by default it fails at once, like a permanent error."""


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    interval_s: float = 10.0
    """Expected time between checkpoints."""
    stall_intervals: int = 0
    """Fail as stalled after this many intervals with no checkpoint; 0 disables the watchdog."""


@dataclass(frozen=True, slots=True)
class WorkloadType:
    name: str
    version: str = "1"
    entrypoint: str | None = None
    """``module:function`` for types registered at runtime."""
    resources: Resources = field(default_factory=Resources)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    timeout_s: float | None = None
    isolation: Isolation = Isolation.ASYNC
    created_at: float = 0.0


class SelectorOp(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    EQ = "="
    NE = "!="


@dataclass(frozen=True, slots=True)
class LabelSelector:
    key: str
    op: SelectorOp
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.op:
            case SelectorOp.EXISTS:
                return value is not None
            case SelectorOp.DOES_NOT_EXIST:
                return value is None
            case SelectorOp.IN | SelectorOp.EQ:
                return value is not None and value in self.values
            case SelectorOp.NOT_IN | SelectorOp.NE:
                return value is None or value not in self.values


@dataclass(frozen=True, slots=True)
class PreferredSelector:
    selector: LabelSelector
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Affinity:
    required: tuple[LabelSelector, ...] = ()
    """Hard: every selector must match the worker's labels."""
    worker: str | None = None
    """Hard: only this named worker."""
    preferred: tuple[PreferredSelector, ...] = ()
    """Soft: score workers whose labels match."""
    anti: tuple[LabelSelector, ...] = ()
    """Hard: never on a worker running a replica whose workload labels match any of these."""
    spread: str | None = None
    """Spread this workload's replicas: ``"worker"`` (one per worker) or a topology label key
    such as ``"zone"`` (one per value)."""


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What a client submits."""

    customer_id: str
    type_name: str
    params: Mapping[str, JSON] = field(default_factory=dict)
    type_version: str | None = None
    mode: Mode = Mode.BATCH
    replicas: int = 1
    affinity: Affinity = field(default_factory=Affinity)
    priority: int = 0
    idempotency_key: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    traceparent: str | None = None
    """The caller's W3C trace context, if any (not part of the spec's identity for
    idempotency)."""


def new_workload_id() -> str:
    """A fresh workload id (the store's at submit, or the leader's when it places the arrival
    before the submit is written)."""
    return f"w-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Workload:
    id: str
    customer_id: str
    type_name: str
    type_version: str
    params: Mapping[str, JSON]
    mode: Mode
    replicas: int
    affinity: Affinity
    priority: int
    idempotency_key: str | None
    labels: Mapping[str, str]
    state: ReplicaState
    created_at: float
    updated_at: float
    traceparent: str | None = None
    """W3C trace context of the submit: scheduling rounds and retries continue its trace."""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    error_class: ErrorClass
    message: str
    failed_items: tuple[JSON, ...] = ()


@dataclass(frozen=True, slots=True)
class Replica:
    workload_id: str
    index: int
    state: ReplicaState
    fence: int
    """Grows by one on every (re)assignment; writes must carry the current value."""
    attempt: int
    worker_id: str | None = None
    lease_expires_at: float | None = None
    previous_worker: str | None = None
    enqueued_at: float = 0.0
    """When it last became pending (queue-wait clock)."""
    not_before: float = 0.0
    """Retry backoff: not placeable before this time."""
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = 0.0
    checkpoint_seq: int = 0
    """Sequence number of the last committed checkpoint; 0 when there is none."""
    checkpoint_at: float | None = None
    result: JSON = None
    error: ErrorInfo | None = None
    resumed_from_seq: int = 0
    """Checkpoint seq the current attempt started from (0: from the beginning)."""

    @property
    def key(self) -> ReplicaKey:
        return ReplicaKey(self.workload_id, self.index)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    workload_id: str
    index: int
    seq: int
    fence: int
    data: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    """e.g. ``workload.submitted``, ``replica.assigned``, ``replica.fenced_out``."""
    at: float
    actor: str
    workload_id: str | None = None
    index: int | None = None
    customer_id: str | None = None
    correlation_id: str | None = None
    reason: str = ""
    data: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    workload_id: str
    index: int
    from_state: ReplicaState
    to_state: ReplicaState
    fence: int
    at: float
    actor: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AutoscalePolicy:
    customer_id: str
    type_name: str
    min_replicas: int
    max_replicas: int
    metric: str
    """A metric workloads report (``ctx.report_metric``) or ``queue_depth`` / ``queue_age``."""
    target: float
    cooldown_s: float = 30.0
    max_step: int = 4


@dataclass(frozen=True, slots=True)
class LeaderLease:
    name: str
    holder: str
    term: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class CoordinatorInfo:
    id: str
    url: str
    last_seen: float


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[Workload, ...]
    next_cursor: str | None
