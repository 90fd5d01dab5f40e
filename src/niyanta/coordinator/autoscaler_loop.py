"""The leader's autoscaler: stored policies applied to customers' continuous workloads.

Every interval, for each policy (customer, workload type) and each of that customer's continuous
workloads of that type, it measures the policy's metric, asks the pure ``desired_replicas`` for
a count, and scales the workload in the store, where new replicas wait for the scheduler.

The metric is either one that the workload reports (``ctx.report_metric``), summed over the
workload's running replicas as the HPA does for a per-pod metric (each replica reports its own
share, e.g. the lag of its partitions), or ``queue_depth`` / ``queue_age``: the customer's
pending replicas (of other workloads: the scaled workload's own unplaced replicas would feed back)
and the age of the oldest one.

Scaling down first asks the replicas to go to checkpoint and yield (``StopReplica`` with reason
``scale_down``); the yield cancels them, and the store's scale then removes whatever did not
yield within the grace. The recommendation history and the last scale time live on the leader;
the last scale time is read back from the ``autoscale.scaled`` events when a leader starts, so a
failover does not cut a cooldown short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from niyanta.autoscale.policy import Recommendation, desired_replicas
from niyanta.clock import Clock
from niyanta.coordinator.catalog import Catalog
from niyanta.coordinator.progress_buffer import ProgressBuffer
from niyanta.coordinator.stopper import Stopper
from niyanta.coordinator.worker_commands import StopReason, WorkerCommands
from niyanta.model import AutoscalePolicy, Event, Mode, Replica, Workload
from niyanta.states import ACTIVE, TERMINAL, ReplicaState
from niyanta.store.base import EventQuery, Store, WorkloadFilter

log = structlog.get_logger("niyanta.coordinator")

ACTOR = "autoscaler"
SCALED = "autoscale.scaled"
QUEUE_DEPTH = "queue_depth"
QUEUE_AGE = "queue_age"
ERROR_PAUSE_S = 1.0
YIELD_POLL_S = 0.05
PAGE = 500


@dataclass
class _WorkloadMemory:
    history: list[Recommendation] = field(default_factory=list)
    last_scaled_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Queue:
    """Pending replicas per customer: (workload id, enqueued at) pairs."""

    by_customer: dict[str, list[tuple[str, float]]]

    def depth(self, customer_id: str, excluding: str) -> float:
        return float(sum(1 for w, _ in self.by_customer.get(customer_id, []) if w != excluding))

    def age(self, customer_id: str, excluding: str, now: float) -> float:
        ages = [now - at for w, at in self.by_customer.get(customer_id, []) if w != excluding]
        return max(ages, default=0.0)


class AutoscalerLoop:
    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        progress: ProgressBuffer,
        commands: WorkerCommands,
        clock: Clock,
        interval_s: float,
        yield_grace_s: float,
        wake_scheduler: Callable[[], None],
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._progress = progress
        self._commands = commands
        self._clock = clock
        self._interval_s = interval_s
        self._yield_grace_s = yield_grace_s
        self._wake_scheduler = wake_scheduler
        self._memory: dict[str, _WorkloadMemory] = {}

    async def run(self, stopper: Stopper) -> None:
        self._memory.clear()  # a new term: read the last scale times back from the store
        await stopper.repeat(
            self.tick,
            interval_s=self._interval_s,
            error_pause_s=ERROR_PAUSE_S,
            failure_event="autoscale.tick_failed",
            first_wait=True,
        )

    async def tick(self) -> None:
        policies = await self._store.list_autoscale_policies()
        if not policies:
            return
        queue = await self._queue() if any(_on_queue(p) for p in policies) else _Queue({})
        seen: set[str] = set()
        for policy in policies:
            for workload in await self._workloads(policy):
                seen.add(workload.id)
                await self._evaluate(policy, workload, queue)
        for workload_id in set(self._memory) - seen:
            del self._memory[workload_id]

    async def _workloads(self, policy: AutoscalePolicy) -> list[Workload]:
        found: list[Workload] = []
        cursor: str | None = None
        while True:
            page = await self._store.list_workloads(
                WorkloadFilter(
                    customer_id=policy.customer_id,
                    type_name=policy.type_name,
                    limit=PAGE,
                    cursor=cursor,
                )
            )
            found.extend(w for w in page.items if w.mode is Mode.CONTINUOUS and _scalable(w))
            cursor = page.next_cursor
            if cursor is None:
                return found

    async def _queue(self) -> _Queue:
        by_customer: dict[str, list[tuple[str, float]]] = {}
        for replica in await self._store.pending_replicas():
            workload = await self._catalog.workload(replica.workload_id)
            by_customer.setdefault(workload.customer_id, []).append(
                (replica.workload_id, replica.enqueued_at)
            )
        return _Queue(by_customer)

    def _measure(
        self, policy: AutoscalePolicy, workload: Workload, replicas: list[Replica], queue: _Queue
    ) -> float | None:
        if policy.metric == QUEUE_DEPTH:
            return queue.depth(workload.customer_id, excluding=workload.id)
        if policy.metric == QUEUE_AGE:
            return queue.age(workload.customer_id, workload.id, self._clock.now())
        reported = self._progress.metrics_of(workload.id)
        running = {r.index for r in replicas if r.state is ReplicaState.RUNNING}
        values = [
            reported[index][policy.metric]
            for index in running
            if policy.metric in reported.get(index, {})
        ]
        return sum(values) if values else None

    async def _memory_of(self, workload_id: str) -> _WorkloadMemory:
        memory = self._memory.get(workload_id)
        if memory is None:
            memory = _WorkloadMemory()
            after = 0
            while True:
                page = await self._store.list_events(
                    EventQuery(
                        workload_id=workload_id, kind_prefix=SCALED, after_id=after, limit=PAGE
                    )
                )
                if page:
                    memory.last_scaled_at = page[-1].at
                    after = page[-1].id
                if len(page) < PAGE:
                    break
            self._memory[workload_id] = memory
        return memory

    async def _evaluate(self, policy: AutoscalePolicy, workload: Workload, queue: _Queue) -> None:
        replicas = await self._store.list_replicas(workload.id)
        live = [r for r in replicas if r.state not in TERMINAL]
        current = len(live)
        if current == 0:
            return
        memory = await self._memory_of(workload.id)
        metric = self._measure(policy, workload, replicas, queue)
        now = self._clock.now()
        decision = desired_replicas(
            policy, current, metric, memory.history, memory.last_scaled_at, now
        )
        if decision.recommendation is not None:
            memory.history = [r for r in memory.history if now - r.at <= policy.cooldown_s] + [
                decision.recommendation
            ]
        # A continuous workload keeps one replica at least (the store scales within 1..max).
        desired = max(1, decision.desired)
        if desired == current:
            return
        if desired < current:
            await self._yield(sorted(live, key=lambda r: r.index)[desired:])
        await self._store.scale_workload(workload.id, desired, ACTOR)
        if desired > current:
            # New replicas are pending: a round places them now (and the leader stops placing
            # arrivals ahead of them, ``SchedulingLoop.submit``).
            self._wake_scheduler()
        scaled = await self._store.append_event(
            Event(
                id=0,
                kind=SCALED,
                at=0.0,
                actor=ACTOR,
                workload_id=workload.id,
                customer_id=workload.customer_id,
                reason=decision.reason,
                data={
                    "from": current,
                    "to": desired,
                    "metric": policy.metric,
                    "value": metric,
                    "target": policy.target,
                },
            )
        )
        # The event's time, so that the cooldown counts as a new leader will read it back.
        memory.last_scaled_at = scaled.at
        log.info(
            SCALED,
            customer=workload.customer_id,
            workload=workload.id,
            type=workload.type_name,
            replicas_from=current,
            replicas_to=desired,
            metric=policy.metric,
            value=metric,
        )

    async def _yield(self, victims: list[Replica]) -> None:
        """Ask the running victims to checkpoint and yield; wait (bounded) until they did."""
        asked = [r for r in victims if r.state in ACTIVE and r.worker_id is not None]
        for replica in asked:
            assert replica.worker_id is not None
            await self._commands.stop(
                replica.worker_id, replica.key, replica.fence, StopReason.SCALE_DOWN
            )
        deadline = time.monotonic() + self._yield_grace_s
        waiting = [r.key for r in asked]
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(YIELD_POLL_S)
            states = [(await self._store.get_replica(key)).state for key in waiting]
            waiting = [key for key, state in zip(waiting, states, strict=True) if state in ACTIVE]


def _scalable(workload: Workload) -> bool:
    """Running or waiting; a paused workload stays as the API left it (scaling would add
    pending replicas to it)."""
    return workload.state not in TERMINAL and workload.state is not ReplicaState.PAUSED


def _on_queue(policy: AutoscalePolicy) -> bool:
    return policy.metric in (QUEUE_DEPTH, QUEUE_AGE)
