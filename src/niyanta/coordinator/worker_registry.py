"""The live workers a coordinator knows, from their Hello and Heartbeat messages.

Only the leader keeps this (workers talk to the leader); it is memory, rebuilt from Hellos after a
failover. Placement reads ``views()``; the API reads ``snapshot()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from niyanta.broker.messages import Capacity, Heartbeat, Hello, InventoryItem
from niyanta.clock import Clock
from niyanta.model import ReplicaKey
from niyanta.scheduler.types import WorkerView


class WorkerState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class Slots:
    slots: int
    cpu: float = 0.0
    memory_mb: int = 0

    @classmethod
    def of(cls, capacity: Capacity) -> Slots:
        return cls(capacity.slots, capacity.cpu, capacity.memory_mb)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    id: str
    session: str
    labels: dict[str, str]
    capacity: Slots
    free: Slots
    types: frozenset[tuple[str, str]]
    """(name, version) of every type the worker can run."""
    running: tuple[InventoryItem, ...]
    state: WorkerState
    joined_at: float
    last_seen: float
    healthy: bool = True
    metrics: dict[str, float] = field(default_factory=dict)

    def view(self, responsive: bool = True) -> WorkerView:
        return WorkerView(
            id=self.id,
            labels=self.labels,
            types=frozenset(name for name, _ in self.types),
            slots=self.capacity.slots,
            cpu=self.capacity.cpu,
            memory_mb=self.capacity.memory_mb,
            schedulable=self.state is WorkerState.ACTIVE and self.healthy and responsive,
        )

    def running_keys(self) -> list[ReplicaKey]:
        return [ReplicaKey(item.workload_id, item.index) for item in self.running]


class WorkerRegistry:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._workers: dict[str, WorkerRecord] = {}

    def join(self, hello: Hello) -> WorkerRecord:
        """Register (or re-register after a reconnect) the worker a Hello announces. A worker
        that was draining stays draining across a reconnect of the same session."""
        now = self._clock.now()
        previous = self._workers.get(hello.worker_id)
        state = WorkerState.ACTIVE
        if previous is not None and previous.session == hello.session:
            state = previous.state
        capacity = Slots.of(hello.capacity)
        record = WorkerRecord(
            id=hello.worker_id,
            session=hello.session,
            labels=dict(hello.labels),
            capacity=capacity,
            free=capacity,
            types=frozenset((t.name, t.version) for t in hello.types),
            running=tuple(hello.inventory),
            state=state,
            joined_at=now,
            last_seen=now,
        )
        self._workers[hello.worker_id] = record
        return record

    def heartbeat(self, worker_id: str, beat: Heartbeat) -> WorkerRecord | None:
        """Record a heartbeat; None for a worker that has not said Hello (it must rejoin)."""
        record = self._workers.get(worker_id)
        if record is None:
            return None
        record = replace(
            record,
            free=Slots.of(beat.free),
            running=tuple(beat.inventory),
            last_seen=self._clock.now(),
            healthy=beat.healthy,
            metrics=dict(beat.metrics),
        )
        self._workers[worker_id] = record
        return record

    def add_type(self, worker_id: str, name: str, version: str) -> None:
        record = self._workers.get(worker_id)
        if record is not None:
            self._workers[worker_id] = replace(record, types=record.types | {(name, version)})

    def drain(self, worker_id: str) -> WorkerRecord | None:
        record = self._workers.get(worker_id)
        if record is None:
            return None
        record = replace(record, state=WorkerState.DRAINING)
        self._workers[worker_id] = record
        return record

    def forget(self, worker_id: str) -> WorkerRecord | None:
        return self._workers.pop(worker_id, None)

    def clear(self) -> None:
        self._workers.clear()

    def get(self, worker_id: str) -> WorkerRecord | None:
        return self._workers.get(worker_id)

    def snapshot(self) -> list[WorkerRecord]:
        return sorted(self._workers.values(), key=lambda w: w.id)

    def views(self, connected: set[str], silent_after_s: float) -> tuple[WorkerView, ...]:
        """The workers placement may use: joined and still connected. One silent for
        ``silent_after_s`` (a lease TTL: frozen, or cut off while its connection looks open)
        has renewed none of its leases and takes nothing new: a replica placed there would
        only wait for its lease to expire again."""
        now = self._clock.now()
        return tuple(
            w.view(responsive=now - w.last_seen <= silent_after_s)
            for w in self.snapshot()
            if w.id in connected
        )

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._workers

    def __len__(self) -> int:
        return len(self._workers)
