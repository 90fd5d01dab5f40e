"""Resource guarantees end to end: a type's memory request is accounted in placement; in process
isolation a workload that allocates past its memory limit is stopped with a clear error and not
retried while its neighbours finish, and a runaway CPU workload is pinned and niced, so that a
neighbour's asyncio workload keeps its pace."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from tests.integration import isolated_workloads
from tests.integration.coordinator_fixtures import eventually
from tests.integration.tier_fleet import fleet

from niyanta.model import ErrorClass
from niyanta.states import ReplicaState


async def test_a_workload_past_its_memory_limit_fails_and_its_neighbours_finish(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path, workers=1, slots=4, registry=isolated_workloads.REGISTRY) as f:
        await f.customer("greedy", "gold")
        await f.customer("neighbour", "gold")
        hog = await f.submit_type("greedy", "hog", {})
        neighbours = [await f.submit_type("neighbour", "ticker", {"ticks": 50}) for _ in range(3)]
        [stopped] = await f.finished([hog], within=30)
        assert stopped.state is ReplicaState.FAILED
        assert stopped.error is not None
        assert stopped.error.error_class is ErrorClass.RESOURCE
        assert stopped.error.message == "exceeded its memory limit of 64 MB (MemoryError)"
        assert stopped.attempt == 1  # not retried: the type does not ask for it
        done = await f.finished(neighbours, within=30)
        assert [r.state for r in done] == [ReplicaState.SUCCEEDED] * 3
        events = [e["kind"] for e in await f.events(hog)]
        assert events[-1] == "replica.failed"

        retried = await f.submit_type("greedy", "hog-retried", {})
        [again] = await f.finished([retried], within=30)
        assert (again.state, again.attempt) == (ReplicaState.FAILED, 2)  # its type said so


async def test_a_runaway_cpu_workload_does_not_slow_another_customer_s(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    async with fleet(tmp_path, workers=1, slots=4, registry=isolated_workloads.REGISTRY) as f:
        await f.customer("noisy", "gold")
        await f.customer("quiet", "gold")
        runaways = [await f.submit_type("noisy", "spin", {"seconds": 3}) for _ in range(cores)]

        async def spinning() -> bool:
            return all([(await f.replica(r)).progress > 0 for r in runaways])

        await eventually(spinning, within=20, what="every runaway burning its core")
        # 100 sleeps of 10 ms: 1 s on an idle loop; the runaways would block a shared loop
        # for their whole 3 s.
        quiet = await f.submit_type("quiet", "ticker", {"ticks": 100})
        [ticker] = await f.finished([quiet], within=30)
        assert ticker.state is ReplicaState.SUCCEEDED
        assert ticker.result["elapsed_s"] < 2.5, ticker.result
        spun = await f.finished(runaways, within=30)
        for replica in spun:
            assert replica.state is ReplicaState.SUCCEEDED
            assert len(replica.result["cores"]) == 1  # cpu 0.5: pinned to one core
            assert replica.result["nice"] >= 5  # ... and niced below the worker
        assert ticker.finished_at is not None
        assert all(r.finished_at and r.finished_at > ticker.finished_at for r in spun)


async def test_memory_requests_are_accounted_in_placement(tmp_path: Path) -> None:
    async with fleet(
        tmp_path,
        workers=1,
        slots=4,
        worker_memory_mb=100,
        registry=isolated_workloads.REGISTRY,
    ) as f:
        await f.customer("acme", "gold")
        ids = [await f.submit_type("acme", "ticker-64mb", {"ticks": 20}) for _ in range(3)]
        held: list[int] = []

        async def sample_held() -> None:
            # Sampled all through the run: a single poll could fall between one replica's
            # finish and the next one's start and see none held.
            while True:
                held.append((await f.active_by_customer())["acme"])
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample_held())

        async def waiting_for_memory() -> bool:
            body = (await f.running.client.get(f"/v1/workloads/{ids[-1]}")).json()
            return body["replicas"][0]["pending_reason"] == "no free capacity for memory 64 MB"

        try:
            await eventually(waiting_for_memory, within=10, what="the third waiting for memory")
            done = await f.finished(ids, within=30)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        most = max(held)
        assert [r.state for r in done] == [ReplicaState.SUCCEEDED] * 3
        assert most == 1  # 4 free slots, but only 100 MB: one 64 MB replica at a time
        started = sorted(r.started_at or 0 for r in done)
        finished = sorted(r.finished_at or 0 for r in done)
        assert started[1] >= finished[0] and started[2] >= finished[1]  # one after another
