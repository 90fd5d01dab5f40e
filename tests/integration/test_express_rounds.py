"""A higher tier's arrival is placed beside the round in flight (an express round), not after
it, and the two rounds never give the same slot twice (``PlacementClaims``).

The regular round is held inside its assignment write by a store whose ``assign_replicas``
waits on a gate for bronze work, as a slow commit under a flood would hold it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.integration.coordinator_fixtures import eventually
from tests.integration.tier_fleet import PLATINUM_AND_BRONZE_TOML, Fleet, fleet

from niyanta.model import Replica
from niyanta.states import ReplicaState
from niyanta.store.base import Assignment, PlacementView
from niyanta.store.sqlite import SqliteStore


class GatedStore(SqliteStore):
    """Holds every assignment of ``held`` workloads until ``gate`` opens; while
    ``read_gate`` is set, also holds the next round's queue read once it has read ``held``
    work, until that gate opens."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.held: set[str] = set()
        self.waiting = 0
        self.read_gate: asyncio.Event | None = None
        self.reading = 0

    async def placement_view(
        self, limit: int, per_customer: int, requeue_due: bool = True
    ) -> PlacementView:
        read = await super().placement_view(limit, per_customer, requeue_due)
        gate = self.read_gate
        if gate is not None and any(r.workload_id in self.held for r in read.pending):
            self.read_gate = None  # once: the rounds after it read freely
            self.reading += 1
            await gate.wait()
        return read

    async def assign_replicas(self, assignments: Sequence[Assignment]) -> list[Replica]:
        if any(a.key.workload_id in self.held for a in assignments):
            self.waiting += 1
            await self.gate.wait()
        return await super().assign_replicas(assignments)


@asynccontextmanager
async def bronze_round_held(
    directory: Path, slots: int, read_gate: asyncio.Event | None = None
) -> AsyncIterator[tuple[Fleet, GatedStore, str]]:
    """A fleet of one worker with ``slots``, and a bronze workload whose round is now inside its
    (held) assignment, or with ``read_gate``, inside its (held) queue read, having read it."""
    store = GatedStore(str(directory / "gated.db"))
    await store.open()
    try:
        async with fleet(
            directory,
            workers=1,
            slots=slots,
            tiers_toml=PLATINUM_AND_BRONZE_TOML,
            store=store,
            schedule_interval_s=30,
        ) as f:
            await f.customer("bulk", "bronze")
            await f.customer("plat", "platinum")
            response = await f.running.client.post(
                "/v1/workloads:batch",
                json={"items": [{"customer_id": "bulk", "type": "steps", "params": _steps(1)}]},
            )
            assert response.status_code == 200, response.text
            bronze: str = response.json()["items"][0]["id"]
            store.held.add(bronze)
            store.read_gate = read_gate
            f.running.runtime.scheduling.wake()
            if read_gate is None:
                await eventually(
                    lambda: store.waiting > 0, what="the bronze round held in its assignment"
                )
            else:
                await eventually(lambda: store.reading > 0, what="the bronze round held reading")
            yield f, store, bronze
    finally:
        await store.close()


def _steps(steps: int) -> dict[str, Any]:
    return {"steps": steps, "step_s": 0.02}


async def test_a_platinum_arrival_runs_while_the_bronze_round_in_flight_is_held(
    tmp_path: Path,
) -> None:
    async with bronze_round_held(tmp_path, slots=2) as (f, store, bronze):
        platinum = await f.submit("plat", steps=1, step_s=0.02)
        [done] = await f.finished([platinum], within=5)
        assert done.state is ReplicaState.SUCCEEDED
        assert (await f.replica(bronze)).state is ReplicaState.PENDING  # still held
        store.gate.set()
        [later] = await f.finished([bronze], within=5)
        assert later.state is ReplicaState.SUCCEEDED


async def test_the_express_round_does_not_take_the_slot_the_held_round_placed_into(
    tmp_path: Path,
) -> None:
    async with bronze_round_held(tmp_path, slots=1) as (f, store, bronze):
        platinum = await f.submit("plat", steps=1, step_s=0.02)
        await asyncio.sleep(0.5)  # the express round has long run: nothing was free
        assert (await f.replica(platinum)).state is ReplicaState.PENDING
        body = (await f.running.client.get(f"/v1/workloads/{platinum}")).json()
        assert body["replicas"][0]["pending_reason"] == "no free capacity"
        store.gate.set()
        first, second = await f.finished([bronze, platinum], within=5)
        assert (first.state, second.state) == (ReplicaState.SUCCEEDED,) * 2
        assert first.finished_at is not None and second.started_at is not None
        assert second.started_at >= first.finished_at  # one slot, one at a time


async def test_a_platinum_arrival_during_the_bronze_rounds_read_runs_beside_that_round(
    tmp_path: Path,
) -> None:
    # The round read its queues before the arrival committed, so they hold no platinum: the
    # arrival is placed in an express round as soon as that read is in, while the bronze round
    # itself stays held in its assignment.
    read_gate = asyncio.Event()
    async with bronze_round_held(tmp_path, slots=2, read_gate=read_gate) as (f, store, bronze):
        platinum = await f.submit("plat", steps=1, step_s=0.02)
        read_gate.set()
        [done] = await f.finished([platinum], within=5)
        assert done.state is ReplicaState.SUCCEEDED
        assert store.waiting == 1  # the bronze round is in its held assignment
        assert (await f.replica(bronze)).state is ReplicaState.PENDING
        store.gate.set()
        [later] = await f.finished([bronze], within=5)
        assert later.state is ReplicaState.SUCCEEDED
