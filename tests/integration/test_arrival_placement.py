"""An arrival at an empty queue is placed by the leader before its submit is written
(``SchedulingLoop.submit``): the submit writes its replicas assigned and starts them. It is
placed on the last round's view of the work in flight plus every placement claimed since, so it
never takes capacity, a cap or a guarantee that the scheduler would not give it; when the
scheduler would not place it, it is written pending and a round places it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.coordinator_fixtures import eventually
from tests.integration.tier_fleet import Fleet, fleet

from niyanta.states import ReplicaState

TIERS_TOML = """
[tiers.platinum]
priority = 400
weight = 8

[tiers.bronze]
priority = 100
weight = 1
"""


async def _submit(f: Fleet, customer: str, steps: int, step_s: float) -> dict[str, Any]:
    """The submit's answer: the workload as just written."""
    response = await f.running.client.post(
        "/v1/workloads",
        json={
            "customer_id": customer,
            "type": "steps",
            "params": {"steps": steps, "step_s": step_s},
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
    async with fleet(tmp_path, workers=1, slots=2, tiers_toml=TIERS_TOML) as f:
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


async def test_concurrent_arrivals_never_take_more_slots_than_are_free(tmp_path: Path) -> None:
    async with fleet(tmp_path, workers=1, slots=2, tiers_toml=TIERS_TOML) as f:
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
    async with fleet(tmp_path, workers=1, slots=4, tiers_toml=TIERS_TOML) as f:
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
