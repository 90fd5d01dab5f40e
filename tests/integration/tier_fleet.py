"""An in-process fleet for the tier tests and ``bench/tiers.py``: a coordinator on SQLite and the
in-memory broker, its tiers from a TOML file (``--tiers``), and real workers running a
checkpointing workload; plus the scenarios both measure (a platinum stream, a bronze flood,
shares of a full fleet, a preemption)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.coordinator_fixtures import Running, eventually, running_coordinator

from niyanta import Registry, WorkloadContext, workload
from niyanta.model import Replica, ReplicaKey
from niyanta.states import TERMINAL, ReplicaState
from niyanta.worker import Worker, WorkerSettings

REGISTRY = Registry()

TIERS_TOML = """
[tiers.platinum]
priority = 400
weight = 8
guaranteed_slots = 2
guarantee_linger_s = 1.0
may_preempt = true
slo = { queue_wait_p95_s = 2.0 }

[tiers.gold]
priority = 300
weight = 4
may_preempt = true

[tiers.silver]
priority = 200
weight = 2
guaranteed_slots = 2

[tiers.bronze]
priority = 100
weight = 1
"""
"""No caps, so that one bronze customer can fill the whole fleet; silver has guaranteed slots
but may not preempt (it reclaims them only through its guarantee); platinum's guaranteed slots
linger as the shipped tier's do."""

PLATINUM_AND_BRONZE_TOML = """
[tiers.platinum]
priority = 400
weight = 8

[tiers.bronze]
priority = 100
weight = 1
"""
"""No guaranteed slots and no preemption: a platinum arrival gets a slot only if one is free."""

SUBMIT_CONCURRENCY = 8
"""Submits in flight at once: each is a write transaction, and more of them at a time only
queue for SQLite's one writer, ahead of the lease renewals."""


@workload("steps", registry=REGISTRY)
async def steps(ctx: WorkloadContext) -> dict[str, Any]:
    """``steps`` sleeps of ``step_s``, a checkpoint after each; a stop request yields with the
    last checkpoint (after ``linger_s``: a workload slow to wind down), and the next attempt
    carries on from it."""
    state = dict(ctx.checkpoint or {"done": 0})
    resumed = {"from_done": state["done"], "from_seq": ctx.checkpoint_seq}
    while state["done"] < ctx.params["steps"]:
        if await ctx.sleep(ctx.params["step_s"]):
            await asyncio.sleep(ctx.params.get("linger_s", 0.0))
            return state
        state["done"] += 1
        await ctx.save_checkpoint(state)
    return {"done": state["done"], **resumed}


@workload("cpu-steps", registry=REGISTRY, resources={"cpu": 1.0})
async def cpu_steps(ctx: WorkloadContext) -> dict[str, Any]:
    """``steps`` asking for a core: placement accounts it against the workers' cpu."""
    return await steps(ctx)


@dataclass
class Fleet:
    running: Running
    workers: list[Worker]

    @property
    def store(self) -> Any:
        return self.running.runtime.store

    async def customer(self, customer_id: str, tier: str, **overrides: Any) -> None:
        body = {"id": customer_id, "tier": tier, **overrides}
        response = await self.running.client.post("/v1/customers", json=body)
        assert response.status_code == 201, response.text

    async def submit(
        self, customer: str, steps: int, step_s: float, replicas: int = 1, **params: float
    ) -> str:
        """A ``steps`` workload."""
        return await self.submit_type(
            customer, "steps", {"steps": steps, "step_s": step_s, **params}, replicas
        )

    async def submit_type(
        self, customer: str, type_name: str, params: dict[str, Any], replicas: int = 1
    ) -> str:
        response = await self.running.client.post(
            "/v1/workloads",
            json={
                "customer_id": customer,
                "type": type_name,
                "params": params,
                "replicas": replicas,
            },
        )
        assert response.status_code == 201, response.text
        workload_id: str = response.json()["id"]
        return workload_id

    async def submit_many(
        self, customer: str, count: int, steps: int, step_s: float, **params: float
    ) -> list[str]:
        ids: list[str] = []
        for start in range(0, count, SUBMIT_CONCURRENCY):
            batch = range(start, min(count, start + SUBMIT_CONCURRENCY))
            ids += await asyncio.gather(
                *(self.submit(customer, steps, step_s, **params) for _ in batch)
            )
        return ids

    async def replica(self, workload_id: str) -> Replica:
        replica: Replica = await self.store.get_replica(ReplicaKey(workload_id, 0))
        return replica

    async def active_by_customer(self) -> Counter[str]:
        """Replicas each customer holds now (scheduled or running)."""
        catalog = self.running.runtime.catalog
        counts: Counter[str] = Counter()
        for replica in await self.store.active_replicas():
            counts[catalog.customer_of(replica.workload_id) or "?"] += 1
        return counts

    async def finished(self, ids: Sequence[str], within: float) -> list[Replica]:
        async def all_done() -> list[Replica] | None:
            replicas = [await self.replica(i) for i in ids]
            return replicas if all(r.state in TERMINAL for r in replicas) else None

        done: list[Replica] = await eventually(all_done, within=within, interval=0.05)
        return done

    async def events(self, workload_id: str) -> list[dict[str, Any]]:
        response = await self.running.client.get(f"/v1/workloads/{workload_id}/events")
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@asynccontextmanager
async def fleet(
    directory: Path,
    *,
    workers: int,
    slots: int,
    registry: Registry = REGISTRY,
    worker_memory_mb: int = 64 * 1024,
    worker_cpu: float | None = None,
    tiers_toml: str = TIERS_TOML,
    **settings: Any,
) -> AsyncIterator[Fleet]:
    """``worker_cpu`` None: each worker offers this machine's cores."""
    tiers_file = directory / "tiers.toml"
    tiers_file.write_text(tiers_toml)
    cpu = {} if worker_cpu is None else {"cpu": worker_cpu}
    async with running_coordinator(
        f"sqlite:///{directory / 'tiers.db'}",
        tiers_file=str(tiers_file),
        heartbeat_interval_s=0.5,
        **settings,
    ) as running:
        started = [
            Worker(
                WorkerSettings(
                    worker_id=f"w{n}",
                    slots=slots,
                    memory_mb=worker_memory_mb,
                    heartbeat_interval_s=0.5,
                    **cpu,
                ),
                running.hub.worker_link(f"w{n}"),
                registry=registry,
            )
            for n in range(workers)
        ]
        tasks = [asyncio.create_task(w.run()) for w in started]
        await eventually(
            lambda: len(running.runtime.registry) == workers, what="every worker joined"
        )
        try:
            yield Fleet(running, started)
        finally:
            await asyncio.gather(*(w.close() for w in started))
            await asyncio.gather(*tasks, return_exceptions=True)


def start_wait(replica: Replica) -> float:
    """Seconds from (last) enqueue until the worker started it."""
    assert replica.started_at is not None
    return replica.started_at - replica.enqueued_at


async def queue_wait(fleet: Fleet, workload_id: str) -> float:
    """Seconds from submit to placement (``replica.scheduled``), as the queue-wait metric and
    the SLO count it: what the worker then takes to start it is not queueing."""
    events = await fleet.events(workload_id)
    submitted = next(e["at"] for e in events if e["kind"] == "workload.submitted")
    placed = next(e["at"] for e in events if e["kind"] == "replica.scheduled")
    return float(placed - submitted)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * 95 // 100) - 1)]


@dataclass(frozen=True)
class Waits:
    queued: list[float]
    """Submit to placement (``queue_wait``): 0 for an arrival placed by its own submit."""
    started: list[float]
    """Submit (its durable enqueue) to running on a worker (``start_wait``)."""


async def steady_stream(
    fleet: Fleet, customer: str, count: int, interval_s: float, steps: int, step_s: float
) -> Waits:
    """Submit ``count`` workloads one every ``interval_s``; their waits once all ran."""
    ids = []
    for _ in range(count):
        ids.append(await fleet.submit(customer, steps, step_s))
        await asyncio.sleep(interval_s)
    done = await fleet.finished(ids, within=60)
    return Waits([await queue_wait(fleet, i) for i in ids], [start_wait(r) for r in done])


async def sample_while(
    fleet: Fleet,
    window_s: float,
    every_s: float,
    check: Callable[[Counter[str]], Awaitable[None] | None] | None = None,
) -> list[Counter[str]]:
    """Counts of active replicas per customer, every ``every_s`` for ``window_s``."""
    samples = []
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        counts = await fleet.active_by_customer()
        samples.append(counts)
        if check is not None:
            outcome = check(counts)
            if outcome is not None:
                await outcome
        await asyncio.sleep(every_s)
    return samples


def shares(samples: Sequence[Counter[str]], customers: Sequence[str]) -> dict[str, float]:
    """Each customer's share of the slot-time the customers held over the samples."""
    totals = {c: sum(s[c] for s in samples) for c in customers}
    held = sum(totals.values()) or 1
    return {c: totals[c] / held for c in customers}


def largest_relative_error(measured: Mapping[str, float], wanted: Mapping[str, float]) -> float:
    return max(abs(measured[c] - wanted[c]) / wanted[c] for c in wanted)


async def full_of(
    fleet: Fleet, customer: str, slots: int, steps: int, step_s: float, **params: float
) -> list[str]:
    """Fill every slot with ``customer``'s workloads and wait until all of them run."""
    ids = await fleet.submit_many(customer, slots, steps, step_s, **params)

    async def all_running() -> bool:
        states = [(await fleet.replica(i)).state for i in ids]
        return all(s is ReplicaState.RUNNING for s in states)

    await eventually(all_running, within=30, what="the fleet is full")
    return ids
