"""The leader's autoscaler, end to end in one process: a real coordinator and worker runtime on
SQLite and the in-memory broker; a continuous workload reports a backlog the test controls."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.integration.coordinator_fixtures import (
    Running,
    eventually,
    running_coordinator,
    start_worker,
)

from niyanta import Registry, WorkloadContext, workload
from niyanta.clock import FakeClock
from niyanta.coordinator.autoscaler_loop import AutoscalerLoop
from niyanta.model import Event
from niyanta.store.base import EventQuery
from niyanta.worker import WorkerSettings

REGISTRY = Registry()
BACKLOG = {"value": 0.0}
"""The queue the consumer's replicas share; replica 0 reports it."""

POLICY = {
    "min_replicas": 1,
    "max_replicas": 5,
    "metric": "backlog",
    "target": 100,
    "cooldown_s": 1.0,
    "max_step": 2,
}


@workload("consumer", registry=REGISTRY)
async def consumer(ctx: WorkloadContext) -> dict[str, int]:
    state = dict(ctx.checkpoint or {"polls": 0})
    while True:
        if ctx.replica == 0:
            await ctx.report_metric("backlog", BACKLOG["value"])
        if await ctx.sleep(0.05):
            await ctx.save_checkpoint(state)  # asked to stop: save where it got to
            return state
        state["polls"] += 1


async def _scaled(running: Running, workload_id: str) -> list[tuple[float, int, int]]:
    events = await running.runtime.store.list_events(
        EventQuery(workload_id=workload_id, kind_prefix="autoscale.scaled")
    )
    return [(e.at, e.data["from"], e.data["to"]) for e in events]


async def _replicas(running: Running, workload_id: str) -> list[dict[str, Any]]:
    body = (await running.client.get(f"/v1/workloads/{workload_id}")).json()
    replicas: list[dict[str, Any]] = body["replicas"]
    return replicas


async def _running_count(running: Running, workload_id: str, count: int) -> bool:
    replicas = await _replicas(running, workload_id)
    live = [r for r in replicas if r["state"] not in ("cancelled", "failed", "succeeded")]
    return len(live) == count and all(r["state"] == "running" for r in live)


async def test_backlog_rising_then_falling_scales_up_then_down_after_cooldown_without_flapping(
    tmp_path: Path,
) -> None:
    BACKLOG["value"] = 0.0
    async with running_coordinator(
        f"sqlite:///{tmp_path / 'autoscale.db'}", autoscale_interval_s=0.1
    ) as running:
        client = running.client
        assert (
            await client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        ).status_code == 201
        settings = WorkerSettings(
            worker_id="w1", slots=6, heartbeat_interval_s=0.2, progress_interval_s=0.05
        )
        worker, worker_task = await start_worker(running, settings, REGISTRY)

        async def announced() -> bool:
            types = (await client.get("/v1/workload-types")).json()["items"]
            return "consumer" in {t["name"] for t in types}

        await eventually(announced, what="worker joined, its types announced")
        put = await client.put("/v1/autoscale/acme/consumer", json=POLICY)
        assert put.status_code == 200, put.text
        submitted = await client.post(
            "/v1/workloads",
            json={"customer_id": "acme", "type": "consumer", "mode": "continuous"},
        )
        assert submitted.status_code == 201, submitted.text
        workload_id = submitted.json()["id"]
        await eventually(lambda: _running_count(running, workload_id, 1), what="1 running")

        BACKLOG["value"] = 450.0  # needs ceil(450 / 100) = 5 replicas: the max
        await eventually(lambda: _running_count(running, workload_id, 5), what="5 running")
        BACKLOG["value"] = 150.0  # needs 2
        await eventually(lambda: _running_count(running, workload_id, 2), what="2 running")

        async def scaled_to_2() -> list[tuple[float, int, int]] | None:
            series = await _scaled(running, workload_id)
            return series if series[-1][2] == 2 else None

        settled = await eventually(scaled_to_2, what="autoscale.scaled to 2")
        # Holding the backlog steady for twice the cooldown changes nothing more.
        await asyncio.sleep(2 * POLICY["cooldown_s"])
        series = await _scaled(running, workload_id)
        assert series == settled

        assert [(a, b) for _, a, b in series] == [(1, 3), (3, 5), (5, 3), (3, 2)]
        times = [at for at, _, _ in series]
        assert times[2] - times[1] >= POLICY["cooldown_s"]  # no scale-down inside the cooldown
        assert times[3] - times[2] >= POLICY["cooldown_s"]
        events = await running.runtime.store.list_events(
            EventQuery(workload_id=workload_id, kind_prefix="autoscale.scaled")
        )
        assert events[0].data["metric"] == "backlog" and events[0].data["value"] == 450.0
        assert events[-1].data["value"] == 150.0

        # The removed replicas (the highest indexes) checkpointed, yielded and were cancelled.
        replicas = {r["index"]: r for r in await _replicas(running, workload_id)}
        assert [replicas[i]["state"] for i in range(5)] == [
            "running",
            "running",
            "cancelled",
            "cancelled",
            "cancelled",
        ]
        assert all(replicas[i]["checkpoint_seq"] >= 1 for i in (2, 3, 4))
        body = (await client.get(f"/v1/workloads/{workload_id}")).json()
        assert (body["replica_count"], body["state"]) == (2, "running")
        cancelled = await running.runtime.store.list_events(
            EventQuery(workload_id=workload_id, kind_prefix="replica.cancelled")
        )
        assert {e.index for e in cancelled} == {2, 3, 4}
        assert all(e.reason == "yielded (scale_down)" for e in cancelled)
        await worker.close()
        await worker_task


async def test_queue_depth_policy_keeps_a_previous_leader_s_cooldown(tmp_path: Path) -> None:
    """A new leader reads the last scale time back from the store: no scale-down inside the
    cooldown of a change the previous leader made. The queue depth does not count the scaled
    workload's own waiting replicas."""
    async with running_coordinator(
        f"sqlite:///{tmp_path / 'failover.db'}", autoscale_interval_s=3600
    ) as running:
        client = running.client
        assert (
            await client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        ).status_code == 201
        assert (await client.post("/v1/workload-types", json={"name": "job"})).status_code == 201
        submitted = await client.post(
            "/v1/workloads",
            json={"customer_id": "acme", "type": "job", "mode": "continuous", "replicas": 4},
        )
        workload_id = submitted.json()["id"]
        for _ in range(2):  # no worker: all of it waits
            await client.post("/v1/workloads", json={"customer_id": "acme", "type": "job"})
        policy = {**POLICY, "metric": "queue_depth", "target": 1, "max_replicas": 10}
        policy.update(cooldown_s=60.0, max_step=4)
        assert (await client.put("/v1/autoscale/acme/job", json=policy)).status_code == 200
        rt = running.runtime
        await rt.store.append_event(
            Event(0, "autoscale.scaled", 0.0, "autoscaler", workload_id=workload_id,
                  customer_id="acme", data={"from": 1, "to": 4})
        )  # fmt: skip

        clock = FakeClock(time.time())
        new_leader = AutoscalerLoop(
            store=rt.store,
            catalog=rt.catalog,
            progress=rt.progress,
            commands=rt.commands,
            clock=clock,
            interval_s=1.0,
            yield_grace_s=0.1,
            wake_scheduler=rt.scheduling.wake,
        )
        await new_leader.tick()  # queue depth 2 wants 2 replicas, but the cooldown holds
        assert len(await _scaled(running, workload_id)) == 1
        clock.advance(61.0)
        await new_leader.tick()
        events = await rt.store.list_events(
            EventQuery(workload_id=workload_id, kind_prefix="autoscale.scaled")
        )
        assert [(e.data["from"], e.data["to"], e.data["value"]) for e in events[1:]] == [
            (4, 2, 2.0)
        ]
        assert (await client.get(f"/v1/workloads/{workload_id}")).json()["replica_count"] == 2
