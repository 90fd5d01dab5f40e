"""Finished attempts, derived from the event log, as the SLO evaluator's samples.

The store records every replica transition as a ``replica.<state>`` event (with the customer),
and a workload's submission, scaling and resumption as ``workload.*`` events. Folding those in
order gives each attempt's queue wait (pending to scheduled) and run time (running to a final
result) without another query per replica, so that the leader's view can be rebuilt from the store
after a failover. No I/O here: the SLO watch feeds the events in.
"""

from __future__ import annotations

from dataclasses import dataclass

from niyanta.model import Event, ReplicaKey
from niyanta.slo.evaluator import AttemptSample

QUEUED_KINDS = frozenset({"workload.submitted", "workload.scaled", "workload.pending"})
"""Workload events after which (new or resumed) replicas wait in the queue."""
FINISHED_KINDS = {"replica.succeeded": False, "replica.failed": True, "replica.retrying": True}
"""Kinds that end an attempt, and whether the attempt failed."""
DROPPED_KINDS = frozenset({"replica.cancelled", "replica.paused"})


@dataclass(frozen=True, slots=True)
class _Placed:
    at: float
    queue_wait_s: float | None


class AttemptTracker:
    """Folds events, in id order, into the attempts they finish."""

    def __init__(self) -> None:
        self._queued_at: dict[str, float] = {}
        self._pending_since: dict[ReplicaKey, float] = {}
        self._placed: dict[ReplicaKey, _Placed] = {}
        self._running_at: dict[ReplicaKey, float] = {}

    def fold(self, event: Event) -> AttemptSample | None:
        """The attempt ``event`` finishes, if it finishes one whose start was seen."""
        if event.workload_id is None:
            return None
        if event.kind in QUEUED_KINDS:
            self._queued_at[event.workload_id] = event.at
            return None
        if event.index is None:
            return None
        key = ReplicaKey(event.workload_id, event.index)
        if event.kind == "replica.pending":
            self._forget(key)
            self._pending_since[key] = event.at
        elif event.kind == "replica.scheduled":
            since = self._pending_since.pop(key, self._queued_at.get(key.workload_id))
            wait = None if since is None else max(0.0, event.at - since)
            self._placed[key] = _Placed(event.at, wait)
        elif event.kind == "replica.running":
            self._running_at[key] = event.at
        elif event.kind in FINISHED_KINDS:
            return self._finish(key, event)
        elif event.kind in DROPPED_KINDS:
            self._forget(key)
        return None

    def _finish(self, key: ReplicaKey, event: Event) -> AttemptSample | None:
        placed = self._placed.pop(key, None)
        started = self._running_at.pop(key, None)
        if placed is None or placed.queue_wait_s is None or event.customer_id is None:
            return None  # started before the events this tracker saw
        run_from = started if started is not None else placed.at
        return AttemptSample(
            customer_id=event.customer_id,
            finished_at=event.at,
            queue_wait_s=placed.queue_wait_s,
            run_time_s=max(0.0, event.at - run_from),
            failed=FINISHED_KINDS[event.kind],
        )

    def _forget(self, key: ReplicaKey) -> None:
        self._pending_since.pop(key, None)
        self._placed.pop(key, None)
        self._running_at.pop(key, None)

    def prune(self, before: float) -> None:
        """Forget workloads queued before ``before`` (bounds memory on a long-lived leader)."""
        for workload_id in [w for w, at in self._queued_at.items() if at < before]:
            del self._queued_at[workload_id]
        for key in [k for k, at in self._pending_since.items() if at < before]:
            del self._pending_since[key]
