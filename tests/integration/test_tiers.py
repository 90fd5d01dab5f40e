"""Tiers end to end on an in-process fleet (coordinator + real workers, SQLite, memory broker):
tier config from a file and the API, priority under a flood, weighted fair share, caps,
guaranteed slots and preemption with a checkpointed resume, each visible in the event log.

Bounds are generous (the machine is shared); ``bench/tiers.py`` reports the real figures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.coordinator_fixtures import eventually, running_coordinator
from tests.integration.tier_fleet import (
    TIERS_TOML,
    Fleet,
    fleet,
    full_of,
    largest_relative_error,
    p95,
    sample_while,
    shares,
    start_wait,
    steady_stream,
)

from niyanta.states import TERMINAL, ReplicaState


def _code(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_tiers_come_from_the_file_and_bad_tier_or_customer_input_is_a_4xx(
    tmp_path: Path,
) -> None:
    tiers_file = tmp_path / "tiers.toml"
    tiers_file.write_text(TIERS_TOML)
    async with running_coordinator(
        f"sqlite:///{tmp_path / 'c.db'}", tiers_file=str(tiers_file)
    ) as running:
        api = running.client
        tiers = {t["name"]: t for t in (await api.get("/v1/tiers")).json()["items"]}
        assert tiers["bronze"]["concurrency_cap"] is None  # the file lifted the default 20
        assert (tiers["silver"]["guaranteed_slots"], tiers["silver"]["may_preempt"]) == (2, False)
        assert tiers["platinum"]["slo"]["queue_wait_p95_s"] == 2.0

        assert _code(await api.put("/v1/tiers/gold", json={"priority": 1, "weight": 0})) == (
            422,
            "invalid_input",
        )
        assert _code(await api.put("/v1/tiers/gold", json={"weight": 2})) == (422, "invalid_input")
        for bad in (
            {"guaranteed_cpu": -0.5},
            {"guaranteed_memory_mb": -1},
            {"guaranteed_cpu": "x"},
            {"guarantee_linger_s": -1},
            {"guarantee_linger_s": 7200},
        ):
            assert _code(await api.put("/v1/tiers/gold", json={"priority": 1, **bad})) == (
                422,
                "invalid_input",
            )
        guaranteed = {
            "priority": 250,
            "guaranteed_cpu": 1.5,
            "guaranteed_memory_mb": 2048,
            "guarantee_linger_s": 0.25,
        }
        fields = ("guaranteed_cpu", "guaranteed_memory_mb", "guarantee_linger_s")
        put = (await api.put("/v1/tiers/steel", json=guaranteed)).json()
        assert tuple(put[f] for f in fields) == (1.5, 2048, 0.25)
        listed = {t["name"]: t for t in (await api.get("/v1/tiers")).json()["items"]}
        assert tuple(listed["steel"][f] for f in fields) == (1.5, 2048, 0.25)
        assert tiers["platinum"]["guarantee_linger_s"] == 1.0
        assert _code(await api.put("/v1/tiers/a b", json={"priority": 1})) == (422, "invalid_input")
        assert _code(
            await api.put("/v1/tiers/gold", json={"priority": 1, "slo": {"error_rate": 2}})
        ) == (422, "invalid_input")
        assert _code(await api.post("/v1/customers", json={"id": "x", "tier": "diamond"})) == (
            404,
            "unknown_tier",
        )
        unknown_measure = {"id": "x", "tier": "gold", "alert_thresholds": {"latency": 1}}
        assert _code(await api.post("/v1/customers", json=unknown_measure)) == (
            422,
            "invalid_input",
        )

        overrides = {"concurrency_cap": 3, "alert_thresholds": {"queue_wait_p95_s": 30}}
        created = await api.post("/v1/customers", json={"id": "acme", "tier": "gold", **overrides})
        assert (created.json()["concurrency_cap"], created.json()["alert_thresholds"]) == (
            3,
            {"queue_wait_p95_s": 30},
        )
        cleared = await api.patch("/v1/customers/acme", json={"concurrency_cap": None})
        assert cleared.json()["concurrency_cap"] is None  # the tier's cap applies again


async def test_platinum_is_not_held_up_by_a_bronze_flood(tmp_path: Path) -> None:
    async with fleet(tmp_path, workers=3, slots=4) as f:
        await f.customer("plat", "platinum")
        await f.customer("bulk", "bronze")
        idle = await steady_stream(f, "plat", 20, interval_s=0.05, steps=2, step_s=0.02)
        flood = await f.submit_many("bulk", 2_000, steps=1, step_s=0.15)
        under_flood = await steady_stream(f, "plat", 50, interval_s=0.05, steps=2, step_s=0.02)
        # Behind the flood, platinum would wait for ~2,000 x 0.15 s / 12 slots = 25 s.
        for waits in ("queued", "started"):
            before, during = p95(getattr(idle, waits)), p95(getattr(under_flood, waits))
            assert during <= before + 1.0, (waits, before, during)
        still_queued = [(await f.replica(i)).state for i in flood[-100:]]
        assert still_queued.count(ReplicaState.PENDING) == 100  # the flood was still there


async def test_gold_customers_share_a_full_fleet_by_their_weights(tmp_path: Path) -> None:
    weights = {"g1": 1, "g2": 1, "g4": 2}
    async with fleet(tmp_path, workers=2, slots=4) as f:
        for customer, weight in weights.items():
            await f.customer(customer, "gold", weight=weight)
        for customer in weights:
            await f.submit_many(customer, 40, steps=5, step_s=0.1)
        await asyncio.sleep(1.0)  # let the fleet fill and churn
        samples = await sample_while(f, window_s=3.0, every_s=0.05)
        measured = shares(samples, list(weights))
        wanted = {"g1": 0.25, "g2": 0.25, "g4": 0.5}
        assert largest_relative_error(measured, wanted) <= 0.10, measured
        held = sorted(sum(s.values()) for s in samples)
        assert held[len(held) // 2] == 8  # the fleet was full (but for a slot changing hands)


async def test_a_customer_never_runs_more_than_its_cap(tmp_path: Path) -> None:
    async with fleet(tmp_path, workers=2, slots=4) as f:
        await f.customer("capped", "bronze", concurrency_cap=3)
        ids = await f.submit_many("capped", 15, steps=3, step_s=0.03)
        most = 0

        def check(counts: Any) -> None:
            nonlocal most
            most = max(most, counts["capped"])
            assert counts["capped"] <= 3, counts

        async def done() -> bool:
            await sample_while(f, window_s=0.2, every_s=0.01, check=check)
            states = [(await f.replica(i)).state for i in ids]
            return all(s is ReplicaState.SUCCEEDED for s in states)

        pending_reason = None

        async def explained() -> str | None:
            body = (await f.running.client.get(f"/v1/workloads/{ids[-1]}")).json()
            return body["replicas"][0]["pending_reason"]  # type: ignore[no-any-return]

        pending_reason = await eventually(explained, what="a pending reason")
        assert pending_reason == "customer capped at its cap of 3"
        await eventually(done, within=30, what="all capped workloads done")
        assert most == 3  # the cap was reached, never passed


def _rounds(f: Fleet) -> float:
    """Scheduling rounds that reached a decision so far."""
    histogram = f.running.runtime.metrics.scheduler_round
    return next(
        s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_count")
    )


async def test_guaranteed_slots_are_claimed_in_the_round_their_work_arrives(
    tmp_path: Path,
) -> None:
    # No timer rounds: only events (a submit, a yield) wake the scheduler. The bronze replicas
    # take 2 s to wind down, so no yield (and no round it wakes) lands before we have looked.
    async with fleet(tmp_path, workers=2, slots=2, schedule_interval_s=30) as f:
        await f.customer("bulk", "bronze")
        await f.customer("steady", "silver")  # guaranteed 2 slots; silver may not preempt
        await full_of(f, "bulk", 4, steps=200, step_s=0.05, linger_s=2.0)
        before = _rounds(f)
        silver = await f.submit("steady", steps=2, step_s=0.02, replicas=2)

        async def preempting() -> list[dict[str, Any]]:
            found = []
            for replica in await f.store.active_replicas():
                events = await f.events(replica.workload_id)
                found += [e for e in events if e["kind"] == "replica.preempting"]
            return found if len(found) == 2 else []

        requested = await eventually(preempting, within=5, what="two bronze asked to yield")
        assert _rounds(f) - before == 1  # the round that first saw the silver work
        assert {e["data"]["for"] for e in requested} == {f"{silver}/0", f"{silver}/1"}
        body = (await f.running.client.get(f"/v1/workloads/{silver}")).json()
        reasons = [r["pending_reason"] or "" for r in body["replicas"]]
        assert all(r.startswith("preempting 1 lower-tier replica on worker") for r in reasons)

        async def both_ended() -> list[ReplicaState] | None:
            states = [r.state for r in await f.store.list_replicas(silver)]
            return states if all(s in TERMINAL for s in states) else None

        # Each yield frees one slot and wakes its own round: the replicas start one after the other.
        ended = await eventually(both_ended, within=10, what="both silver replicas ended")
        assert ended == [ReplicaState.SUCCEEDED] * 2


CPU_GUARANTEE_TOML = """
[tiers.platinum]
priority = 400
guaranteed_cpu = 2
may_preempt = false

[tiers.bronze]
priority = 100
"""
"""Platinum guarantees cores only (no slots) and may not preempt: whatever it reclaims, it
reclaims through its cpu guarantee."""


async def test_guaranteed_cpu_is_claimed_in_the_round_its_work_arrives(tmp_path: Path) -> None:
    # Two workers of 2 cores and 4 slots: four 1-core bronze replicas take every core and leave
    # half the slots free; more bronze waits for cpu. Only events wake the scheduler, and the
    # bronze replicas take 2 s to wind down, so nothing yields before we have looked.
    async with fleet(
        tmp_path,
        workers=2,
        slots=4,
        worker_cpu=2.0,
        tiers_toml=CPU_GUARANTEE_TOML,
        schedule_interval_s=30,
    ) as f:
        await f.customer("bulk", "bronze")
        await f.customer("plat", "platinum")
        long = {"steps": 200, "step_s": 0.05, "linger_s": 2.0}
        running = [await f.submit_type("bulk", "cpu-steps", long) for _ in range(4)]

        async def all_running() -> bool:
            states = [(await f.replica(i)).state for i in running]
            return all(s is ReplicaState.RUNNING for s in states)

        await eventually(all_running, within=30, what="every core taken")
        flood = [await f.submit_type("bulk", "cpu-steps", long) for _ in range(4)]

        async def reason(workload_id: str) -> str:
            body = (await f.running.client.get(f"/v1/workloads/{workload_id}")).json()
            return body["replicas"][0]["pending_reason"] or ""  # type: ignore[no-any-return]

        async def flood_waits() -> bool:
            return all([await reason(i) == "no free capacity for cpu 1" for i in flood])

        await eventually(flood_waits, within=10, what="the flood waits for cpu")
        before = _rounds(f)
        platinum = await f.submit_type("plat", "cpu-steps", {"steps": 2, "step_s": 0.02})

        async def preempting() -> list[dict[str, Any]]:
            found = []
            for workload_id in running:
                events = await f.events(workload_id)
                found += [e for e in events if e["kind"] == "replica.preempting"]
            return found

        [requested] = await eventually(preempting, within=5, what="a bronze asked to yield")
        assert _rounds(f) - before == 1  # the round that first saw the platinum work
        assert requested["data"]["for"] == f"{platinum}/0"
        assert (await reason(platinum)).startswith("preempting 1 lower-tier replica on worker")
        held = "free cpu is held for platinum's guaranteed capacity (1 core short)"
        assert [await reason(i) for i in flood] == [held] * 4
        [done] = await f.finished([platinum], within=10)
        assert done.state is ReplicaState.SUCCEEDED


async def test_platinum_preempts_bronze_which_resumes_from_its_checkpoint(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path, workers=2, slots=2) as f:
        await f.customer("plat", "platinum")
        await f.customer("bulk", "bronze")
        bronze = await full_of(f, "bulk", 4, steps=40, step_s=0.05)
        await asyncio.sleep(0.3)  # a few checkpoints each
        platinum = await f.submit("plat", steps=3, step_s=0.02)
        [started] = await f.finished([platinum], within=10)
        assert started.state is ReplicaState.SUCCEEDED
        assert start_wait(started) <= 2.0  # from submit to running

        victims = []
        for workload_id in bronze:
            kinds = [e["kind"] for e in await f.events(workload_id)]
            if "replica.preempting" in kinds:
                victims.append(workload_id)
        assert len(victims) == 1
        [victim] = await f.finished(victims, within=20)
        events = await f.events(victim.workload_id)
        assert [e["kind"] for e in events] == [
            "workload.submitted",
            "replica.scheduled",
            "replica.running",
            "replica.preempting",  # the scheduler's decision, naming the platinum replica
            "replica.pending",  # yielded with its checkpoint, requeued
            "replica.scheduled",
            "replica.running",  # resumed from the checkpoint
            "replica.succeeded",
        ]
        decision, requeued = events[3], events[4]
        assert decision["data"]["for"] == f"{platinum}/0"
        assert requeued["reason"] == "yielded (preempt)"
        assert victim.result["done"] == 40
        assert victim.result["from_seq"] == victim.resumed_from_seq
        assert victim.result["from_seq"] >= max(1, decision["data"]["checkpoint_seq"])
        assert victim.result["from_done"] == victim.result["from_seq"]  # one step per checkpoint
        assert victim.attempt == 1  # a preemption is not a failed attempt
        platinum_events = [e["kind"] for e in await f.events(platinum)]
        assert platinum_events == [
            "workload.submitted",
            "replica.scheduled",
            "replica.running",
            "replica.succeeded",
        ]
        assert started.started_at is not None and requeued["at"] <= started.started_at


async def test_a_slot_platinum_used_lingers_through_a_bronze_backlog_for_its_next_arrival(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path, workers=1, slots=3) as f:
        await f.customer("plat", "platinum")
        await f.customer("bulk", "bronze")
        backlog = await f.submit_many("bulk", 150, steps=1, step_s=0.1)

        async def bronze_holds(slots: int) -> bool:
            return (await f.active_by_customer())["bulk"] == slots

        await eventually(lambda: bronze_holds(3), within=10, what="bronze fills the fleet")
        first = await f.submit("plat", steps=1, step_s=0.05)
        await f.finished([first], within=10)
        # Bronze replicas end every ~33 ms and the backlog refills them; platinum's slot, and
        # one more for an arrival beyond it (its guarantee is 2), are not among them for its
        # guarantee_linger_s (1 s). One look could fall between a bronze replica's end and its
        # refill: look throughout 0.3 s.
        held = await sample_while(f, window_s=0.3, every_s=0.02)
        assert max(counts["bulk"] for counts in held) == 1
        second = await f.submit("plat", steps=1, step_s=0.05)
        [placed] = await f.finished([second], within=10)
        assert placed.state is ReplicaState.SUCCEEDED
        yielded_for = [
            e["data"]["for"]
            for workload_id in backlog
            for e in await f.events(workload_id)
            if e["kind"] == "replica.preempting"
        ]
        assert f"{second}/0" not in yielded_for  # it found its slot free
        await eventually(lambda: bronze_holds(3), within=5, what="bronze takes the slot back")
        assert (await f.replica(backlog[-1])).state is ReplicaState.PENDING  # still backlogged


async def test_placeable_work_behind_a_window_of_unplaceable_work_is_reached(
    tmp_path: Path,
) -> None:
    # One worker of 2 slots: a round reads 16 of a customer's pending replicas. The first 40
    # ask for a label no worker has; the 41st can run anywhere. Rounds widen their read while
    # the whole window stays pending for where it may run, until they reach it.
    async with fleet(tmp_path, workers=1, slots=2) as f:
        await f.customer("picky", "bronze")
        nowhere = {"required": [{"key": "gpu", "op": "=", "values": ["a100"]}]}
        stuck = []
        for _ in range(40):
            response = await f.running.client.post(
                "/v1/workloads",
                json={
                    "customer_id": "picky",
                    "type": "steps",
                    "params": {"steps": 1, "step_s": 0.01},
                    "affinity": nowhere,
                },
            )
            assert response.status_code == 201, response.text
            stuck.append(response.json()["id"])
        runnable = await f.submit("picky", steps=1, step_s=0.01)
        [done] = await f.finished([runnable], within=10)
        assert done.state is ReplicaState.SUCCEEDED
        body = (await f.running.client.get(f"/v1/workloads/{stuck[0]}")).json()
        assert body["replicas"][0]["state"] == "pending"
        assert body["replicas"][0]["pending_reason"] == "no worker with gpu=a100"
