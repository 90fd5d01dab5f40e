"""Progress reports coalesced per replica (latest wins) and written in periodic batches, plus the
metrics workload code reports (``ctx.report_metric``), kept for the autoscaler."""

from __future__ import annotations

from collections.abc import Mapping

from niyanta.coordinator.ordered_writes import OrderedWriter
from niyanta.coordinator.stopper import Stopper
from niyanta.model import ReplicaKey
from niyanta.store.base import RecordProgress


class ProgressBuffer:
    def __init__(self, writer: OrderedWriter, interval_s: float = 0.1) -> None:
        self._writer = writer
        self._interval_s = interval_s
        self._latest: dict[ReplicaKey, RecordProgress] = {}
        self._metrics: dict[ReplicaKey, dict[str, float]] = {}

    def record(
        self, key: ReplicaKey, fence: int, progress: float, metrics: Mapping[str, float]
    ) -> None:
        self._latest[key] = RecordProgress(key, fence, progress)
        if metrics:
            self._metrics.setdefault(key, {}).update(metrics)

    def metrics_of(self, workload_id: str) -> dict[int, dict[str, float]]:
        """The latest reported metrics of a workload's replicas, by replica index."""
        return {
            key.index: dict(values)
            for key, values in self._metrics.items()
            if key.workload_id == workload_id
        }

    def forget(self, key: ReplicaKey) -> None:
        self._latest.pop(key, None)
        self._metrics.pop(key, None)

    def flush(self) -> None:
        """Hand every buffered report to the writer (a stale one is refused and dropped)."""
        latest, self._latest = self._latest, {}
        for write in latest.values():
            self._writer.submit_detached(write)

    async def run(self, stopper: Stopper) -> None:
        while not await stopper.pause(self._interval_s):
            self.flush()
