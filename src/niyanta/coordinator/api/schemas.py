"""Request and response bodies of the HTTP API (``/v1``), as pydantic models; conversions to and
from the domain model live next to each model."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from niyanta.coordinator.service import ClusterView, WorkloadView
from niyanta.coordinator.worker_registry import Slots, WorkerRecord
from niyanta.model import (
    Affinity,
    AutoscalePolicy,
    Checkpoint,
    CheckpointPolicy,
    Customer,
    ErrorInfo,
    Event,
    Isolation,
    LabelSelector,
    Mode,
    PreferredSelector,
    Replica,
    Resources,
    RetryPolicy,
    SelectorOp,
    SloTargets,
    Tier,
    Workload,
    WorkloadSpec,
    WorkloadType,
)
from niyanta.slo.evaluator import MEASURES

ENTRYPOINT_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
"""Customer and tier names."""


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- workload types ----------------------------------------------------------------------------


class ResourcesBody(Body):
    cpu: float = Field(default=0.0, ge=0)
    memory_mb: int = Field(default=0, ge=0)


class RetryBody(Body):
    max_attempts: int = Field(default=3, ge=1)
    initial_backoff_s: float = Field(default=1.0, ge=0)
    max_backoff_s: float = Field(default=60.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.2, ge=0, le=1)
    retry_resource_errors: bool = False


class CheckpointPolicyBody(Body):
    interval_s: float = Field(default=10.0, gt=0)
    stall_intervals: int = Field(default=0, ge=0)


class WorkloadTypeIn(Body):
    name: str = Field(min_length=1, max_length=200)
    version: str = Field(default="1", min_length=1, max_length=100)
    entrypoint: str | None = Field(default=None, pattern=ENTRYPOINT_PATTERN)
    resources: ResourcesBody = Field(default_factory=ResourcesBody)
    retry: RetryBody = Field(default_factory=RetryBody)
    checkpoint: CheckpointPolicyBody = Field(default_factory=CheckpointPolicyBody)
    timeout_s: float | None = Field(default=None, gt=0)
    isolation: Isolation = Isolation.ASYNC

    def to_model(self) -> WorkloadType:
        return WorkloadType(
            name=self.name,
            version=self.version,
            entrypoint=self.entrypoint,
            resources=Resources(**self.resources.model_dump()),
            retry=RetryPolicy(**self.retry.model_dump()),
            checkpoint=CheckpointPolicy(**self.checkpoint.model_dump()),
            timeout_s=self.timeout_s,
            isolation=self.isolation,
        )


class WorkloadTypeOut(WorkloadTypeIn):
    created_at: float

    @classmethod
    def of(cls, t: WorkloadType) -> WorkloadTypeOut:
        return cls.model_validate(t, from_attributes=True)


class WorkloadTypeList(BaseModel):
    items: list[WorkloadTypeOut]


# --- tiers and customers -----------------------------------------------------------------------


class SloBody(Body):
    queue_wait_p95_s: float | None = Field(default=None, gt=0)
    run_time_p95_s: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)


class TierIn(Body):
    priority: int
    weight: float = Field(default=1.0, gt=0)
    guaranteed_slots: int = Field(default=0, ge=0)
    guaranteed_cpu: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    guaranteed_memory_mb: int = Field(default=0, ge=0)
    guarantee_linger_s: float = Field(default=0.0, ge=0, le=3600, allow_inf_nan=False)
    concurrency_cap: int | None = Field(default=None, ge=0)
    may_preempt: bool = False
    slo: SloBody = Field(default_factory=SloBody)

    def to_model(self, name: str) -> Tier:
        return Tier(
            name=name,
            priority=self.priority,
            weight=self.weight,
            guaranteed_slots=self.guaranteed_slots,
            guaranteed_cpu=self.guaranteed_cpu,
            guaranteed_memory_mb=self.guaranteed_memory_mb,
            guarantee_linger_s=self.guarantee_linger_s,
            concurrency_cap=self.concurrency_cap,
            may_preempt=self.may_preempt,
            slo=SloTargets(**self.slo.model_dump()),
        )


class TierOut(TierIn):
    name: str

    @classmethod
    def of(cls, t: Tier) -> TierOut:
        return cls.model_validate(t, from_attributes=True)


class TierList(BaseModel):
    items: list[TierOut]


def _known_measures(thresholds: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(thresholds) - set(MEASURES))
    if unknown:
        raise ValueError(f"unknown SLO measure {', '.join(unknown)}; use {', '.join(MEASURES)}")
    return thresholds


AlertThresholds = Annotated[
    dict[str, Annotated[float, Field(ge=0)]], AfterValidator(_known_measures)
]
"""A customer's own alert thresholds, per SLO measure; each overrides its tier's target."""


class CustomerIn(Body):
    id: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    tier: str = Field(min_length=1)
    name: str = ""
    weight: float | None = Field(default=None, gt=0)
    concurrency_cap: int | None = Field(default=None, ge=0)
    alert_thresholds: AlertThresholds = Field(default_factory=dict)

    def to_model(self) -> Customer:
        return Customer(
            id=self.id,
            tier=self.tier,
            name=self.name,
            weight=self.weight,
            concurrency_cap=self.concurrency_cap,
            alert_thresholds=dict(self.alert_thresholds),
        )


class CustomerPatch(Body):
    tier: str | None = Field(default=None, min_length=1)
    name: str | None = None
    weight: float | None = Field(default=None, gt=0)
    concurrency_cap: int | None = Field(default=None, ge=0)
    alert_thresholds: AlertThresholds | None = None


class CustomerOut(BaseModel):
    id: str
    tier: str
    name: str
    weight: float | None
    concurrency_cap: int | None
    alert_thresholds: dict[str, float]
    created_at: float

    @classmethod
    def of(cls, c: Customer) -> CustomerOut:
        return cls.model_validate(c, from_attributes=True)


class CustomerList(BaseModel):
    items: list[CustomerOut]


# --- affinity ----------------------------------------------------------------------------------


class SelectorBody(Body):
    key: str = Field(min_length=1)
    op: SelectorOp
    values: list[str] = Field(default_factory=list)

    def to_model(self) -> LabelSelector:
        return LabelSelector(self.key, self.op, tuple(self.values))

    @classmethod
    def of(cls, s: LabelSelector) -> SelectorBody:
        return cls(key=s.key, op=s.op, values=list(s.values))


class PreferredBody(SelectorBody):
    weight: int = Field(default=1, ge=1, le=100)


class AffinityBody(Body):
    required: list[SelectorBody] = Field(default_factory=list)
    worker: str | None = None
    preferred: list[PreferredBody] = Field(default_factory=list)
    anti: list[SelectorBody] = Field(default_factory=list)
    spread: str | None = None

    def to_model(self) -> Affinity:
        return Affinity(
            required=tuple(s.to_model() for s in self.required),
            worker=self.worker,
            preferred=tuple(PreferredSelector(p.to_model(), p.weight) for p in self.preferred),
            anti=tuple(s.to_model() for s in self.anti),
            spread=self.spread,
        )

    @classmethod
    def of(cls, a: Affinity) -> AffinityBody:
        return cls(
            required=[SelectorBody.of(s) for s in a.required],
            worker=a.worker,
            preferred=[
                PreferredBody(
                    key=p.selector.key,
                    op=p.selector.op,
                    values=list(p.selector.values),
                    weight=p.weight,
                )
                for p in a.preferred
            ],
            anti=[SelectorBody.of(s) for s in a.anti],
            spread=a.spread,
        )


# --- workloads ---------------------------------------------------------------------------------


class SubmitIn(Body):
    customer_id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    type_version: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    mode: Mode = Mode.BATCH
    replicas: int = Field(default=1, ge=1)
    affinity: AffinityBody = Field(default_factory=AffinityBody)
    priority: int = 0
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    labels: dict[str, str] = Field(default_factory=dict)

    def to_spec(self, idempotency_key: str | None, traceparent: str | None = None) -> WorkloadSpec:
        return WorkloadSpec(
            customer_id=self.customer_id,
            type_name=self.type,
            params=self.params,
            type_version=self.type_version,
            mode=self.mode,
            replicas=self.replicas,
            affinity=self.affinity.to_model(),
            priority=self.priority,
            idempotency_key=idempotency_key,
            labels=self.labels,
            traceparent=traceparent,
        )


MAX_BATCH_SUBMIT = 1000


class SubmitBatchIn(Body):
    items: list[SubmitIn] = Field(min_length=1, max_length=MAX_BATCH_SUBMIT)


class ErrorInfoOut(BaseModel):
    error_class: str
    message: str
    failed_items: list[Any]

    @classmethod
    def of(cls, e: ErrorInfo) -> ErrorInfoOut:
        return cls(
            error_class=e.error_class.value, message=e.message, failed_items=list(e.failed_items)
        )


class ReplicaOut(BaseModel):
    index: int
    state: str
    worker_id: str | None
    fence: int
    attempt: int
    progress: float
    checkpoint_seq: int
    checkpoint_at: float | None
    resumed_from_seq: int
    previous_worker: str | None
    lease_expires_at: float | None
    enqueued_at: float
    not_before: float
    started_at: float | None
    finished_at: float | None
    result: Any
    error: ErrorInfoOut | None
    pending_reason: str | None = None
    """Why a pending replica is not placed yet (leader's last round); null otherwise."""

    @classmethod
    def of(cls, r: Replica, pending_reason: str | None = None) -> ReplicaOut:
        return cls(
            index=r.index,
            state=r.state.value,
            worker_id=r.worker_id,
            fence=r.fence,
            attempt=r.attempt,
            progress=r.progress,
            checkpoint_seq=r.checkpoint_seq,
            checkpoint_at=r.checkpoint_at,
            resumed_from_seq=r.resumed_from_seq,
            previous_worker=r.previous_worker,
            lease_expires_at=r.lease_expires_at,
            enqueued_at=r.enqueued_at,
            not_before=r.not_before,
            started_at=r.started_at,
            finished_at=r.finished_at,
            result=r.result,
            error=ErrorInfoOut.of(r.error) if r.error is not None else None,
            pending_reason=pending_reason,
        )


class WorkloadOut(BaseModel):
    id: str
    customer_id: str
    type: str
    type_version: str
    params: dict[str, Any]
    mode: str
    replica_count: int
    affinity: AffinityBody
    priority: int
    idempotency_key: str | None
    labels: dict[str, str]
    state: str
    created_at: float
    updated_at: float
    replicas: list[ReplicaOut]

    @classmethod
    def of(cls, view: WorkloadView) -> WorkloadOut:
        w: Workload = view.workload
        return cls(
            id=w.id,
            customer_id=w.customer_id,
            type=w.type_name,
            type_version=w.type_version,
            params=dict(w.params),
            mode=w.mode.value,
            replica_count=w.replicas,
            affinity=AffinityBody.of(w.affinity),
            priority=w.priority,
            idempotency_key=w.idempotency_key,
            labels=dict(w.labels),
            state=w.state.value,
            created_at=w.created_at,
            updated_at=w.updated_at,
            replicas=[ReplicaOut.of(r, view.pending_reasons.get(r.index)) for r in view.replicas],
        )


class SubmitItemOut(BaseModel):
    """One item of a batch submit: ``status`` is what ``POST /v1/workloads`` would have
    answered for it (201 created, 200 known idempotency key: ``id`` is the workload's; 4xx with
    ``error``)."""

    status: int
    id: str | None = None
    error: ErrorDetail | None = None


class SubmitBatchOut(BaseModel):
    items: list[SubmitItemOut]


class WorkloadPageOut(BaseModel):
    items: list[WorkloadOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: int
    kind: str
    at: float
    actor: str
    workload_id: str | None
    index: int | None
    customer_id: str | None
    correlation_id: str | None
    reason: str
    data: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls.model_validate(e, from_attributes=True)


class EventList(BaseModel):
    items: list[EventOut]


class CheckpointOut(BaseModel):
    workload_id: str
    replica: int
    seq: int
    fence: int
    created_at: float
    data: Any
    """The checkpoint as JSON; None when it is not JSON (then see ``data_base64``)."""
    data_base64: str | None = None

    @classmethod
    def of(cls, c: Checkpoint) -> CheckpointOut:
        try:
            data, raw = json.loads(c.data.decode()), None
        except (UnicodeDecodeError, ValueError):
            data, raw = None, base64.b64encode(c.data).decode()
        return cls(
            workload_id=c.workload_id,
            replica=c.index,
            seq=c.seq,
            fence=c.fence,
            created_at=c.created_at,
            data=data,
            data_base64=raw,
        )


# --- autoscaling -------------------------------------------------------------------------------


class AutoscaleIn(Body):
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    metric: str = Field(min_length=1)
    target: float = Field(gt=0)
    cooldown_s: float = Field(default=30.0, ge=0)
    max_step: int = Field(default=4, ge=1)

    def to_model(self, customer_id: str, type_name: str) -> AutoscalePolicy:
        return AutoscalePolicy(customer_id=customer_id, type_name=type_name, **self.model_dump())


class AutoscaleOut(AutoscaleIn):
    customer_id: str
    type_name: str

    @classmethod
    def of(cls, p: AutoscalePolicy) -> AutoscaleOut:
        return cls.model_validate(p, from_attributes=True)


class AutoscaleList(BaseModel):
    items: list[AutoscaleOut]


# --- workers and cluster -----------------------------------------------------------------------


class SlotsOut(BaseModel):
    slots: int
    cpu: float
    memory_mb: int

    @classmethod
    def of(cls, s: Slots) -> SlotsOut:
        return cls.model_validate(s, from_attributes=True)


class RunningOut(BaseModel):
    workload_id: str
    index: int
    fence: int
    checkpoint_seq: int
    state: str


class WorkerOut(BaseModel):
    id: str
    labels: dict[str, str]
    capacity: SlotsOut
    free: SlotsOut
    running: list[RunningOut]
    state: Literal["active", "draining"]
    healthy: bool
    types: list[str]
    joined_at: float
    last_seen: float

    @classmethod
    def of(cls, w: WorkerRecord) -> WorkerOut:
        return cls(
            id=w.id,
            labels=dict(w.labels),
            capacity=SlotsOut.of(w.capacity),
            free=SlotsOut.of(w.free),
            running=[
                RunningOut(
                    workload_id=i.workload_id,
                    index=i.index,
                    fence=i.fence,
                    checkpoint_seq=i.checkpoint_seq,
                    state=i.state,
                )
                for i in w.running
            ],
            state=w.state.value,
            healthy=w.healthy,
            types=sorted(f"{name}@{version}" for name, version in w.types),
            joined_at=w.joined_at,
            last_seen=w.last_seen,
        )


class WorkerList(BaseModel):
    items: list[WorkerOut]


class CoordinatorOut(BaseModel):
    id: str
    url: str
    last_seen: float
    leader: bool


class LeaderOut(BaseModel):
    id: str
    term: int
    expires_at: float


class ClusterOut(BaseModel):
    coordinators: list[CoordinatorOut]
    leader: LeaderOut | None
    term: int
    this: str

    @classmethod
    def of(cls, view: ClusterView) -> ClusterOut:
        holder = view.leader.holder if view.leader is not None else None
        return cls(
            coordinators=[
                CoordinatorOut(id=c.id, url=c.url, last_seen=c.last_seen, leader=c.id == holder)
                for c in view.coordinators
            ],
            leader=(
                LeaderOut(
                    id=view.leader.holder,
                    term=view.leader.term,
                    expires_at=view.leader.expires_at,
                )
                if view.leader is not None
                else None
            ),
            term=view.leader.term if view.leader is not None else 0,
            this=view.this,
        )


class HealthOut(BaseModel):
    status: Literal["ok"]
    coordinator_id: str
    leader: bool


class ReadyOut(BaseModel):
    ready: bool
    coordinator_id: str
    leader: bool
