"""The leader's fleet sizing: desired workers per pool from live workers and pending demand,
published as a gauge and handed to a FleetScaler (an in-memory one here: its input is what the
loop decides; the Kubernetes and EC2 scalers have their own tests)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.coordinator_fixtures import (
    Running,
    eventually,
    running_coordinator,
    start_worker,
)

from niyanta import Registry, WorkloadContext, workload
from niyanta.autoscale.fleet import PoolBounds
from niyanta.autoscale.fleet_scaler import FleetScaler
from niyanta.coordinator.fleet_loop import FleetLoop
from niyanta.worker import WorkerSettings

REGISTRY = Registry()


@workload("hold", registry=REGISTRY)
async def hold(ctx: WorkloadContext) -> None:
    await ctx.sleep(3600)


class MemoryFleetScaler:
    """Pools sized in memory; records every ``scale`` call."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = dict(sizes)
        self.calls: list[tuple[str, int]] = []

    async def current(self, pool: str) -> int:
        return self.sizes.get(pool, 0)

    async def scale(self, pool: str, workers: int) -> None:
        self.calls.append((pool, workers))
        self.sizes[pool] = workers


def _loop(running: Running, scaler: FleetScaler | None, pools: frozenset[str]) -> FleetLoop:
    rt = running.runtime
    return FleetLoop(
        store=rt.store,
        catalog=rt.catalog,
        registry=rt.registry,
        metrics=rt.metrics,
        bounds=PoolBounds(min_workers=0, max_workers=10, slots_per_worker=4),
        interval_s=0.1,
        scaler=scaler,
        scaled_pools=pools,
    )


async def _submit(running: Running, pool: str) -> None:
    response = await running.client.post(
        "/v1/workloads",
        json={
            "customer_id": "acme",
            "type": "hold",
            "affinity": {"required": [{"key": "pool", "op": "=", "values": [pool]}]},
        },
    )
    assert response.status_code == 201, response.text


async def test_desired_workers_per_pool_are_published_and_handed_to_the_scaler(
    tmp_path: Path,
) -> None:
    async with running_coordinator(
        f"sqlite:///{tmp_path / 'fleet.db'}", fleet_interval_s=0.1
    ) as running:
        client = running.client
        assert (
            await client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        ).status_code == 201
        settings = WorkerSettings(
            worker_id="w1", slots=2, labels={"pool": "cpu"}, heartbeat_interval_s=0.1
        )
        worker, worker_task = await start_worker(running, settings, REGISTRY)

        async def announced() -> bool:
            types = (await client.get("/v1/workload-types")).json()["items"]
            return "hold" in {t["name"] for t in types}

        await eventually(announced, what="worker joined, its types announced")
        for _ in range(4):
            await _submit(running, "cpu")  # 2 run on w1 (2 slots), 2 wait
        for _ in range(5):
            await _submit(running, "gpu")  # no gpu worker yet: all wait

        # cpu: 4 slots of demand at w1's 2 slots a worker = 2; gpu: 5 at the default 4 = 2.
        expected = {"cpu": 2, "gpu": 2}
        published = _loop(running, None, frozenset())
        await eventually(lambda: published.tick(), what="demand seen")

        async def settled() -> bool:
            return await published.tick() == expected

        await eventually(settled, what=f"desired {expected}")

        async def gauge() -> bool:
            text = (await client.get("/metrics")).text
            return all(
                f'niyanta_fleet_desired_workers{{pool="{pool}"}} {n}.0' in text
                for pool, n in expected.items()
            )

        await eventually(gauge, what="the leader's fleet gauge")

        scaler = MemoryFleetScaler({"cpu": 1, "gpu": 0, "idle": 3})
        loop = _loop(running, scaler, frozenset({"cpu", "gpu", "idle"}))
        assert await loop.tick() == {**expected, "idle": 0}
        # Only the configured pools, each set to its desired size; an idle pool down to min.
        assert sorted(scaler.calls) == [("cpu", 2), ("gpu", 2), ("idle", 0)]
        await loop.tick()
        assert len(scaler.calls) == 3  # already at the desired sizes: nothing more asked
        await worker.close()
        await worker_task
