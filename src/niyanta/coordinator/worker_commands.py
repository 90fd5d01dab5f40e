"""Commands the coordinator sends to workers (start, stop), and why it asked each replica to stop.

A worker answers a stop for preempt, drain, scale-down or pause with ``Result(outcome="yielded")``;
the coordinator must then know where the replica goes (back to pending, or to paused), so every
stop it asks for is remembered here until the yield arrives, keyed by replica and fence.
"""

from __future__ import annotations

import asyncio

import structlog

from niyanta.broker.base import CoordinatorEndpoint
from niyanta.broker.messages import StartReplica, StopReplica
from niyanta.errors import BrokerError
from niyanta.model import Checkpoint, Replica, ReplicaKey, Workload
from niyanta.observability.tracing import current_traceparent

log = structlog.get_logger("niyanta.coordinator")


class StopReason:
    CANCEL = "cancel"
    PAUSE = "pause"
    PREEMPT = "preempt"
    SCALE_DOWN = "scale_down"
    DRAIN = "drain"
    FENCED = "fenced"


class StopRequests:
    """Why a replica (at a given fence) was asked to stop; bounded by what is running."""

    def __init__(self) -> None:
        self._reasons: dict[tuple[ReplicaKey, int], str] = {}

    def ask(self, key: ReplicaKey, fence: int, reason: str) -> None:
        self._reasons[(key, fence)] = reason

    def asked(self, key: ReplicaKey, fence: int) -> bool:
        return (key, fence) in self._reasons

    def reason(self, key: ReplicaKey, fence: int) -> str | None:
        return self._reasons.get((key, fence))

    def take(self, key: ReplicaKey, fence: int) -> str | None:
        return self._reasons.pop((key, fence), None)

    def forget_replica(self, key: ReplicaKey) -> None:
        for entry in [e for e in self._reasons if e[0] == key]:
            del self._reasons[entry]

    def clear(self) -> None:
        self._reasons.clear()


class WorkerCommands:
    def __init__(self, endpoint: CoordinatorEndpoint, lease_ttl_s: float) -> None:
        self._endpoint = endpoint
        self._lease_ttl_s = lease_ttl_s
        self.stops = StopRequests()
        self._background: set[asyncio.Task[bool]] = set()

    async def start(
        self, replica: Replica, workload: Workload, checkpoint: Checkpoint | None
    ) -> bool:
        """Send StartReplica to the replica's worker; False when it cannot be reached."""
        assert replica.worker_id is not None
        message = StartReplica(
            workload_id=replica.workload_id,
            index=replica.index,
            fence=replica.fence,
            attempt=replica.attempt,
            customer_id=workload.customer_id,
            type_name=workload.type_name,
            type_version=workload.type_version,
            params=dict(workload.params),
            checkpoint=checkpoint.data if checkpoint is not None else None,
            checkpoint_seq=checkpoint.seq if checkpoint is not None else 0,
            lease_ttl_s=self._lease_ttl_s,
            corr=replica.workload_id,
            traceparent=current_traceparent(),  # the dispatch span: execute's parent
        )
        fields = _fields(replica.key, replica.worker_id, replica.fence, workload.customer_id)
        try:
            await self._endpoint.send(replica.worker_id, message)
        except BrokerError as exc:
            log.warning("replica.start_undelivered", error=str(exc), **fields)
            return False
        log.info(
            "replica.start_sent",
            attempt=replica.attempt,
            checkpoint_seq=message.checkpoint_seq,
            **fields,
        )
        return True

    async def stop(
        self,
        worker_id: str,
        key: ReplicaKey,
        fence: int,
        reason: str,
        customer_id: str | None = None,
    ) -> bool:
        """Ask ``worker_id`` to stop the replica it holds at ``fence``; False if unreachable."""
        if reason not in (StopReason.CANCEL, StopReason.FENCED):
            self.stops.ask(key, fence, reason)
        message = StopReplica(
            workload_id=key.workload_id, index=key.index, fence=fence, reason=reason
        )
        fields = _fields(key, worker_id, fence, customer_id)
        try:
            await self._endpoint.send(worker_id, message)
        except BrokerError as exc:
            log.warning("replica.stop_undelivered", reason=reason, error=str(exc), **fields)
            return False
        log.info("replica.stop_sent", reason=reason, **fields)
        return True

    def spawn_stop(self, worker_id: str, key: ReplicaKey, fence: int, reason: str) -> None:
        """``stop`` from code that cannot wait (a callback)."""
        task = asyncio.create_task(self.stop(worker_id, key, fence, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _fields(
    key: ReplicaKey, worker_id: str | None, fence: int, customer_id: str | None
) -> dict[str, object]:
    return {
        "customer": customer_id,
        "workload": key.workload_id,
        "replica": key.index,
        "worker": worker_id,
        "fence": fence,
    }
