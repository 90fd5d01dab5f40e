"""The demo's closing figures, computed from what the API returns (workloads with their replicas,
and each workload's event log): per customer, how many workloads finished, failed, retried or
resumed from a checkpoint, and the queue wait p50/p95 of every placement."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from niyanta.client import JSONObject

QUEUED_KINDS = frozenset({"workload.submitted", "replica.pending"})
"""Events after which a replica waits in the queue (the submit, or a return to pending after a
lost lease, a drain, a preemption, a retry's backoff or a resume)."""
PLACED_KIND = "replica.scheduled"
RETRY_KIND = "replica.retrying"
REQUEUED_KIND = "replica.pending"


def queue_waits(events: Iterable[JSONObject]) -> list[float]:
    """Seconds each placement of a workload's replicas waited: from the last time the replica
    was queued to its ``replica.scheduled`` event. A workload-wide event (no ``index``) queues
    every replica."""
    queued_at: dict[int | None, float] = {}
    waits: list[float] = []
    for event in sorted(events, key=lambda e: (e["at"], e.get("id", 0))):
        kind = event["kind"]
        index = event.get("index")
        if kind in QUEUED_KINDS:
            queued_at[index] = event["at"]
        elif kind == PLACED_KIND:
            since = queued_at.pop(index, queued_at.get(None))
            if since is not None:
                waits.append(max(0.0, event["at"] - since))
    return waits


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class CustomerSummary:
    customer: str
    tier: str = ""
    submitted: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    """Workloads with at least one retry after a transient error."""
    resumed: int = 0
    """Workloads whose replica resumed from a checkpoint on a (re)placement."""
    preempted: int = 0
    """Times one of its replicas yielded its slot to a higher tier (and was queued again)."""
    waits: list[float] = field(default_factory=list)

    @property
    def wait_p50(self) -> float | None:
        return percentile(self.waits, 50)

    @property
    def wait_p95(self) -> float | None:
        return percentile(self.waits, 95)


def summarize(
    workloads: Iterable[JSONObject],
    events_by_workload: dict[str, list[JSONObject]],
    tiers: dict[str, str],
) -> list[CustomerSummary]:
    """One summary per customer, in the order of ``tiers`` (customer -> tier name)."""
    summaries = {customer: CustomerSummary(customer, tier) for customer, tier in tiers.items()}
    for workload in workloads:
        customer = str(workload["customer_id"])
        summary = summaries.setdefault(customer, CustomerSummary(customer))
        events = events_by_workload.get(str(workload["id"]), [])
        summary.submitted += 1
        summary.done += workload.get("state") == "succeeded"
        summary.failed += workload.get("state") == "failed"
        summary.retried += any(event["kind"] == RETRY_KIND for event in events)
        summary.resumed += any(
            int(replica.get("resumed_from_seq") or 0) > 0
            for replica in workload.get("replicas") or []
        )
        summary.preempted += sum(
            event["kind"] == REQUEUED_KIND and "preempt" in str(event.get("reason"))
            for event in events
        )
        summary.waits.extend(queue_waits(events))
    return list(summaries.values())
