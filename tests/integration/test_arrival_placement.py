"""An arrival of a higher tier than anything waiting (at an empty queue: any arrival) is placed
by the leader before its submit is written (``SchedulingLoop.submit``): the submit writes its
replicas assigned and starts them. It is placed on the last round's view of the work in flight,
less what has ended since, plus every placement claimed since, so it never takes capacity, a
cap or a guarantee that the scheduler would not give it; when the scheduler would not place
it, it is written pending and a round places it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.coordinator_fixtures import eventually
from tests.integration.tier_fleet import PLATINUM_AND_BRONZE_TOML, Fleet, fleet

from niyanta.states import ReplicaState
from niyanta.store.base import PlacementView
from niyanta.store.sqlite import SqliteStore


class HeldReads(SqliteStore):
    """While ``hold`` is set, a round's read waits for it."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.hold: asyncio.Event | None = None
        self.held = 0

    async def placement_view(
        self, limit: int, per_customer: int, requeue_due: bool = True
    ) -> PlacementView:
        if self.hold is not None:
            self.held += 1
            await self.hold.wait()
        return await super().placement_view(limit, per_customer, requeue_due)


async def _submit(
    f: Fleet, customer: str, steps: int, step_s: float, **fields: Any
) -> dict[str, Any]:
    """The submit's answer: the workload as just written."""
    response = await f.running.client.post(
        "/v1/workloads",
        json={
            "customer_id": customer,
            "type": "steps",
            "params": {"steps": steps, "step_s": step_s},
            **fields,
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _quiet(f: Fleet) -> None:
    """A workload run to the end: the round after it found the queue empty."""
    warm = await f.submit("plat", steps=1, step_s=0.01)
    await f.finished([warm], within=5)
    await asyncio.sleep(0.1)


async def test_an_arrival_at_an_empty_queue_is_written_placed_and_runs(tmp_path: Path) -> None:
    async with fleet(tmp_path, workers=1, slots=2, tiers_toml=PLATINUM_AND_BRONZE_TOML) as f:
        await f.customer("plat", "platinum")
        await _quiet(f)
        body = await _submit(f, "plat", steps=2, step_s=0.01)
        [replica] = body["replicas"]
        assert (body["state"], replica["state"], replica["worker_id"], replica["fence"]) == (
            "scheduled",
            "scheduled",
            "w0",
            1,
        )
        [done] = await f.finished([body["id"]], within=5)
        assert (done.state, done.fence, done.attempt) == (ReplicaState.SUCCEEDED, 1, 1)
        events = await f.events(body["id"])
        assert [(e["kind"], e["actor"]) for e in events] == [
            ("workload.submitted", "api"),
            ("replica.scheduled", "scheduler"),
            ("replica.running", "worker:w0"),
            ("replica.succeeded", "worker:w0"),
        ]


async def test_every_replica_of_an_arrival_is_placed_or_none_is(tmp_path: Path) -> None:
    async with fleet(tmp_path, workers=3, slots=1, tiers_toml=PLATINUM_AND_BRONZE_TOML) as f:
        await f.customer("plat", "platinum")
        await _quiet(f)
        both = await _submit(f, "plat", steps=6, step_s=0.05, replicas=2)
        placed = sorted((r["state"], r["fence"]) for r in both["replicas"])
        assert placed == [("scheduled", 1), ("scheduled", 1)]
        assert len({r["worker_id"] for r in both["replicas"]}) == 2
        # One slot is left: of the next arrival's 2 replicas only 1 could run, so its submit
        # places neither; rounds place them, one now and one as a slot frees.
        later = await _submit(f, "plat", steps=1, step_s=0.01, replicas=2)
        assert [r["state"] for r in later["replicas"]] == ["pending", "pending"]
        await eventually(
            lambda: _all_succeeded(f, [both["id"], later["id"]]), within=10, what="all ran"
        )


async def _all_succeeded(f: Fleet, workload_ids: list[str]) -> bool:
    for workload_id in workload_ids:
        for replica in await f.store.list_replicas(workload_id):
            if replica.state is not ReplicaState.SUCCEEDED:
                return False
    return True


async def test_concurrent_arrivals_never_take_more_slots_than_are_free(tmp_path: Path) -> None:
    async with fleet(tmp_path, workers=1, slots=2, tiers_toml=PLATINUM_AND_BRONZE_TOML) as f:
        await f.customer("plat", "platinum")
        await _quiet(f)
        bodies = await asyncio.gather(*(_submit(f, "plat", steps=8, step_s=0.05) for _ in range(5)))
        states = sorted(b["replicas"][0]["state"] for b in bodies)
        # Both free slots may go to arrivals (or to the round the first refused one wakes);
        # never a third.
        assert 1 <= states.count("scheduled") <= 2 and len(states) == 5
        peak = 0

        async def all_done() -> bool:
            nonlocal peak
            peak = max(peak, sum((await f.active_by_customer()).values()))
            replicas = [await f.replica(b["id"]) for b in bodies]
            return all(r.state is ReplicaState.SUCCEEDED for r in replicas)

        await eventually(all_done, within=15, interval=0.02)
        assert peak == 2
        starts = sorted(
            (r.started_at or 0.0, r.finished_at or 0.0)
            for r in [await f.replica(b["id"]) for b in bodies]
        )
        # One slot frees before the third starts.
        assert starts[2][0] >= min(starts[0][1], starts[1][1])


async def test_an_arrival_over_its_customer_s_cap_is_written_pending(tmp_path: Path) -> None:
    async with fleet(tmp_path, workers=1, slots=4, tiers_toml=PLATINUM_AND_BRONZE_TOML) as f:
        await f.customer("plat", "platinum")
        await f.customer("capped", "bronze", concurrency_cap=1)
        await _quiet(f)
        first = await _submit(f, "capped", steps=6, step_s=0.05)
        second = await _submit(f, "capped", steps=1, step_s=0.01)
        assert first["replicas"][0]["state"] == "scheduled"
        assert second["replicas"][0]["state"] == "pending"
        ran, after = await f.finished([first["id"], second["id"]], within=10)
        assert (ran.state, after.state) == (ReplicaState.SUCCEEDED,) * 2
        assert after.started_at is not None and ran.finished_at is not None
        assert after.started_at >= ran.finished_at  # the cap held: one at a time


async def test_an_arrival_goes_ahead_of_waiting_work_only_from_a_higher_tier(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path, workers=1, slots=2, tiers_toml=PLATINUM_AND_BRONZE_TOML) as f:
        await f.customer("plat", "platinum")
        await f.customer("bulk", "bronze")
        await f.customer("more", "bronze")
        await _quiet(f)
        # Waits for a worker that is not there: bronze work stays pending beside free slots.
        stuck = await _submit(f, "bulk", steps=1, step_s=0.01, affinity={"worker": "w9"})
        await asyncio.sleep(0.3)  # a round has read it and left it waiting
        same_tier = await _submit(f, "more", steps=1, step_s=0.01)
        assert same_tier["replicas"][0]["state"] == "pending"  # a round places it, in order
        await asyncio.sleep(0.3)
        higher = await _submit(f, "plat", steps=1, step_s=0.01)
        assert higher["replicas"][0]["state"] == "scheduled"
        ran = await f.finished([same_tier["id"], higher["id"]], within=5)
        assert [r.state for r in ran] == [ReplicaState.SUCCEEDED] * 2
        assert (await f.replica(stuck["id"])).state is ReplicaState.PENDING


async def test_an_arrival_counts_capacity_freed_since_the_last_round_read(tmp_path: Path) -> None:
    store = HeldReads(str(tmp_path / "held.db"))
    await store.open()
    try:
        async with fleet(
            tmp_path,
            workers=1,
            slots=1,
            tiers_toml=PLATINUM_AND_BRONZE_TOML,
            store=store,
            schedule_interval_s=30,
        ) as f:
            await f.customer("plat", "platinum")
            await _quiet(f)
            first = await _submit(f, "plat", steps=10, step_s=0.05)
            assert first["replicas"][0]["state"] == "scheduled"
            await eventually(lambda: _running(f, first["id"]), what="the first workload running")
            f.running.runtime.scheduling.wake()
            await asyncio.sleep(0.2)  # that round's view has the only slot taken
            store.hold = asyncio.Event()
            await f.finished([first["id"]], within=5)
            # Its end woke a round, held in its read: the view still counts it as running.
            await eventually(lambda: store.held == 1, what="the next round held")
            second = await _submit(f, "plat", steps=1, step_s=0.01)
            assert second["replicas"][0]["state"] == "scheduled"
            store.hold.set()
            [done] = await f.finished([second["id"]], within=5)
            assert done.state is ReplicaState.SUCCEEDED
    finally:
        await store.close()


async def _running(f: Fleet, workload_id: str) -> bool:
    return (await f.replica(workload_id)).state is ReplicaState.RUNNING
