"""The scheduler: pure placement, fairness, affinity and preemption. No I/O."""

from niyanta.scheduler.round import schedule
from niyanta.scheduler.types import (
    CustomerPolicy,
    PendingReason,
    PendingReplica,
    Placement,
    Preemption,
    RunningReplica,
    SchedulerDecision,
    SchedulerInput,
    ScoringPolicy,
    WorkerView,
)

__all__ = [
    "CustomerPolicy",
    "PendingReason",
    "PendingReplica",
    "Placement",
    "Preemption",
    "RunningReplica",
    "SchedulerDecision",
    "SchedulerInput",
    "ScoringPolicy",
    "WorkerView",
    "schedule",
]
