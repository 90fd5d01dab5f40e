"""One test (or a few) per scheduling rule, on small hand-built clusters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from niyanta.model import (
    DEFAULT_TIERS,
    Affinity,
    LabelSelector,
    PreferredSelector,
    ReplicaKey,
    Resources,
    SelectorOp,
    Tier,
)
from niyanta.scheduler import (
    CustomerPolicy,
    PendingReplica,
    RunningReplica,
    SchedulerDecision,
    SchedulerInput,
    ScoringPolicy,
    WorkerView,
    schedule,
)
from niyanta.scheduler.types import TierUse

TIERS = {t.name: t for t in DEFAULT_TIERS}
NOW = 10_000.0


def worker(
    wid: str,
    slots: int = 4,
    labels: Mapping[str, str] | None = None,
    types: Sequence[str] = ("job",),
    cpu: float = 0.0,
    memory_mb: int = 0,
    schedulable: bool = True,
) -> WorkerView:
    return WorkerView(wid, labels or {}, frozenset(types), slots, cpu, memory_mb, schedulable)


def pending(
    workload: str,
    index: int = 0,
    customer: str = "acme",
    tier: str = "gold",
    type_name: str = "job",
    cpu: float = 0.0,
    memory_mb: int = 0,
    affinity: Affinity | None = None,
    priority: int = 0,
    enqueued_at: float = NOW,
    previous: str | None = None,
    labels: Mapping[str, str] | None = None,
    fence: int = 0,
) -> PendingReplica:
    return PendingReplica(
        ReplicaKey(workload, index),
        customer,
        tier,
        type_name,
        Resources(cpu, memory_mb),
        affinity or Affinity(),
        priority,
        enqueued_at,
        previous,
        labels or {},
        fence,
    )


def running(
    workload: str,
    on: str,
    customer: str = "old",
    tier: str = "bronze",
    cpu: float = 0.0,
    memory_mb: int = 0,
    labels: Mapping[str, str] | None = None,
    checkpoint_at: float | None = None,
    index: int = 0,
) -> RunningReplica:
    return RunningReplica(
        ReplicaKey(workload, index),
        customer,
        tier,
        on,
        Resources(cpu, memory_mb),
        labels or {},
        last_checkpoint_at=checkpoint_at,
    )


def run(
    pend: Sequence[PendingReplica],
    workers: Sequence[WorkerView],
    runs: Sequence[RunningReplica] = (),
    customers: Mapping[str, CustomerPolicy] | None = None,
    tiers: Mapping[str, Tier] = TIERS,
    policy: ScoringPolicy = ScoringPolicy.SPREAD,
    aging_s: float = 300.0,
    lingering: Mapping[str, TierUse] | None = None,
) -> SchedulerDecision:
    inp = SchedulerInput(
        tuple(pend),
        tuple(workers),
        tuple(runs),
        tiers,
        customers or {},
        NOW,
        policy,
        aging_s,
        lingering or {},
    )
    return schedule(inp)


def where(decision: SchedulerDecision) -> dict[str, str]:
    return {str(p.key): p.worker_id for p in decision.placements}


def why(decision: SchedulerDecision) -> dict[str, str]:
    return {str(p.key): p.reason for p in decision.pending}


def sel(key: str, op: SelectorOp, *values: str) -> LabelSelector:
    return LabelSelector(key, op, values)


# -- filters ---------------------------------------------------------------------------------


def test_places_only_on_workers_that_run_the_type() -> None:
    decision = run(
        [pending("a", type_name="train"), pending("b", type_name="video")],
        [worker("w1", types=["job"]), worker("w2", types=["train"])],
    )
    assert where(decision) == {"a/0": "w2"}
    assert why(decision) == {"b/0": "no worker runs type video"}


def test_placement_carries_the_pending_fence() -> None:
    decision = run([pending("a", fence=7)], [worker("w1")])
    assert decision.placements[0].fence == 7


def test_slots_limit_placements_per_worker() -> None:
    decision = run([pending("a", i) for i in range(3)], [worker("w1", slots=2)])
    assert len(decision.placements) == 2
    assert list(why(decision).values()) == ["no free capacity"]


def test_cpu_and_memory_are_checked_when_accounted() -> None:
    decision = run(
        [pending("big", cpu=4.0, memory_mb=100), pending("huge", memory_mb=9_000)],
        [worker("small", cpu=2.0, memory_mb=8_192), worker("large", cpu=8.0, memory_mb=8_192)],
    )
    assert where(decision) == {"big/0": "large"}
    assert why(decision) == {"huge/0": "no free capacity for memory 9000 MB"}


def test_running_replicas_use_capacity() -> None:
    decision = run(
        [pending("a", cpu=2.0)],
        [worker("w1", cpu=4.0), worker("w2", cpu=4.0)],
        [running("r", on="w1", cpu=3.0)],
    )
    assert where(decision) == {"a/0": "w2"}


def test_a_worker_with_zero_cpu_or_memory_does_not_account_them() -> None:
    decision = run([pending("a", cpu=64.0, memory_mb=1_000_000)], [worker("w1")])
    assert where(decision) == {"a/0": "w1"}


def test_unschedulable_workers_get_nothing() -> None:
    decision = run([pending("a")], [worker("w1", schedulable=False)])
    assert why(decision) == {"a/0": "no schedulable worker"}


@pytest.mark.parametrize(
    ("selector", "chosen"),
    [
        (sel("zone", SelectorOp.IN, "b", "c"), "wb"),
        (sel("zone", SelectorOp.NOT_IN, "a", "b"), "wnone"),
        (sel("gpu", SelectorOp.EXISTS), "wa"),
        (sel("zone", SelectorOp.DOES_NOT_EXIST), "wnone"),
        (sel("zone", SelectorOp.EQ, "a"), "wa"),
        (sel("gpu", SelectorOp.NE, "true"), "wb"),
    ],
)
def test_hard_affinity_operators(selector: LabelSelector, chosen: str) -> None:
    workers = [
        worker("wa", labels={"zone": "a", "gpu": "true"}),
        worker("wb", labels={"zone": "b"}),
        worker("wnone", labels={}),
    ]
    decision = run([pending("x", affinity=Affinity(required=(selector,)))], workers)
    assert where(decision) == {"x/0": chosen}


def test_missing_label_is_reported_readably() -> None:
    gpu = Affinity(required=(sel("gpu", SelectorOp.EQ, "true"),))
    decision = run([pending("a", affinity=gpu)], [worker("w1", labels={"zone": "a"})])
    assert why(decision) == {"a/0": "no worker with gpu=true"}


def test_label_present_only_on_workers_of_another_type_is_reported() -> None:
    gpu = Affinity(required=(sel("gpu", SelectorOp.EQ, "true"),))
    decision = run(
        [pending("a", affinity=gpu)],
        [worker("w1", labels={"gpu": "true"}, types=["train"]), worker("w2")],
    )
    assert why(decision) == {"a/0": "no worker with gpu=true runs type job"}


def test_customers_held_back_by_where_they_may_run_are_named_but_not_those_out_of_room() -> None:
    gpu = Affinity(required=(sel("gpu", SelectorOp.EQ, "true"),))
    apart = Affinity(anti=(sel("app", SelectorOp.EQ, "cache"),))
    decision = run(
        [
            pending("a", customer="picky", affinity=gpu),
            pending("b", customer="named", affinity=Affinity(worker="w9")),
            pending("c", 0, customer="apart", affinity=apart, labels={"app": "cache"}),
            pending("c", 1, customer="apart", affinity=apart, labels={"app": "cache"}),
            *(pending(f"bulk{i}", customer="bulk") for i in range(3)),
        ],
        [worker("w1", slots=2)],
        [running("cache", on="w1", tier="gold", labels={"app": "cache"})],
    )
    assert list(where(decision)) == ["bulk0/0"]
    assert why(decision)["bulk1/0"] == "no free capacity"
    assert decision.constrained == frozenset({"picky", "named", "apart"})


def test_named_worker_affinity() -> None:
    decision = run(
        [
            pending("a", affinity=Affinity(worker="w2")),
            pending("b", affinity=Affinity(worker="w9")),
        ],
        [worker("w1"), worker("w2")],
    )
    assert where(decision) == {"a/0": "w2"}
    assert why(decision) == {"b/0": "worker w9 is unknown"}


def test_anti_affinity_keeps_replicas_apart_from_matching_ones() -> None:
    not_beside_db = Affinity(anti=(sel("app", SelectorOp.EQ, "db"),))
    decision = run(
        [pending("web", affinity=not_beside_db)],
        [worker("w1"), worker("w2", slots=1)],
        [running("db", on="w1", labels={"app": "db"})],
    )
    assert where(decision) == {"web/0": "w2"}


def test_anti_affinity_counts_replicas_placed_in_the_same_round() -> None:
    apart = Affinity(anti=(sel("app", SelectorOp.EQ, "cache"),))
    decision = run(
        [pending("c", i, affinity=apart, labels={"app": "cache"}) for i in range(3)],
        [worker("w1"), worker("w2")],
    )
    assert sorted(where(decision).values()) == ["w1", "w2"]
    assert why(decision) == {"c/2": "every worker with room runs a replica matching app=cache"}


def test_spread_by_worker() -> None:
    spread = Affinity(spread="worker")
    decision = run(
        [pending("s", i, affinity=spread) for i in range(3)],
        [worker("w1", slots=8), worker("w2", slots=8)],
        [running("s", on="w1", index=9)],
    )
    assert where(decision) == {"s/0": "w2"}
    reason = "spread by worker: every worker with room already runs a replica of this workload"
    assert why(decision) == {"s/1": reason, "s/2": reason}


def test_spread_by_topology_label() -> None:
    spread = Affinity(spread="zone")
    workers = [
        worker("a1", labels={"zone": "a"}),
        worker("a2", labels={"zone": "a"}),
        worker("b1", labels={"zone": "b"}),
    ]
    decision = run([pending("s", i, affinity=spread) for i in range(3)], workers)
    zones = sorted(w[0] for w in where(decision).values())
    assert zones == ["a", "b"]
    assert len(decision.pending) == 1


# -- scoring ---------------------------------------------------------------------------------


def test_soft_affinity_prefers_matching_workers() -> None:
    prefers_b = Affinity(preferred=(PreferredSelector(sel("zone", SelectorOp.EQ, "b"), 5),))
    decision = run(
        [pending("a", affinity=prefers_b)],
        [worker("w1", labels={"zone": "a"}), worker("w2", labels={"zone": "b"}, slots=1)],
    )
    assert where(decision) == {"a/0": "w2"}


def test_soft_affinity_yields_when_the_preferred_workers_are_full() -> None:
    prefers_b = Affinity(preferred=(PreferredSelector(sel("zone", SelectorOp.EQ, "b"), 5),))
    decision = run(
        [pending("a", i, affinity=prefers_b) for i in range(2)],
        [worker("w1", labels={"zone": "a"}), worker("w2", labels={"zone": "b"}, slots=1)],
    )
    assert sorted(where(decision).values()) == ["w1", "w2"]


def test_stickiness_returns_a_replica_to_its_previous_worker() -> None:
    decision = run(
        [pending("a", previous="w2")],
        [worker("w1"), worker("w2")],
        [running("r", on="w2")],  # w2 is busier, so only stickiness can pick it
    )
    assert where(decision) == {"a/0": "w2"}


def test_spread_policy_picks_least_utilised_and_binpack_the_most() -> None:
    workers = [worker("w1"), worker("w2"), worker("w3")]
    busy = [running("r1", on="w2"), running("r2", on="w3"), running("r3", on="w3")]
    spread = run([pending("a")], workers, busy, policy=ScoringPolicy.SPREAD)
    packed = run([pending("a")], workers, busy, policy=ScoringPolicy.BINPACK)
    assert where(spread) == {"a/0": "w1"}
    assert where(packed) == {"a/0": "w3"}


def test_binpack_fills_one_worker_before_the_next() -> None:
    decision = run(
        [pending("a", i) for i in range(6)],
        [worker("w1"), worker("w2"), worker("w3")],
        policy=ScoringPolicy.BINPACK,
    )
    assert Counter(where(decision).values()) == {"w1": 4, "w2": 2}


def test_spread_evens_load_out() -> None:
    decision = run([pending("a", i) for i in range(6)], [worker("w1"), worker("w2"), worker("w3")])
    assert Counter(where(decision).values()) == {"w1": 2, "w2": 2, "w3": 2}


def test_utilisation_uses_the_fullest_resource() -> None:
    decision = run(
        [pending("a", cpu=1.0)],
        [worker("w1", cpu=8.0), worker("w2", cpu=8.0)],
        [running("r1", on="w1", cpu=6.0), running("r2", on="w2"), running("r3", on="w2")],
    )
    assert where(decision) == {"a/0": "w2"}  # w1: 3/4 cpu used; w2: 2/4 slots used


# -- order -----------------------------------------------------------------------------------


def test_higher_tier_goes_first() -> None:
    decision = run(
        [
            pending("low", customer="b", tier="bronze", enqueued_at=NOW - 100),
            pending("high", customer="p", tier="platinum"),
        ],
        [worker("w1", slots=1)],
    )
    assert where(decision) == {"high/0": "w1"}
    assert why(decision) == {"low/0": "waiting behind platinum"}


def test_weighted_fair_share_between_customers_of_a_tier() -> None:
    customers = {
        "heavy": CustomerPolicy("heavy", "gold", 3.0, None),
        "light": CustomerPolicy("light", "gold", 1.0, None),
    }
    flood = [pending(f"h{i}", customer="heavy") for i in range(20)]
    trickle = [pending(f"l{i}", customer="light") for i in range(20)]
    decision = run(flood + trickle, [worker("w1", slots=8)], customers=customers)
    counts = Counter(p.key.workload_id[0] for p in decision.placements)
    assert counts == {"h": 6, "l": 2}


def test_fair_share_counts_what_customers_already_run() -> None:
    customers = {c: CustomerPolicy(c, "gold", 1.0, None) for c in ("x", "y")}
    decision = run(
        [pending(f"x{i}", customer="x") for i in range(4)]
        + [pending(f"y{i}", customer="y") for i in range(4)],
        [worker("w1", slots=6)],
        [
            running("rx0", on="w1", customer="x", tier="gold"),
            running("rx1", on="w1", customer="x", tier="gold"),
        ],
        customers=customers,
    )
    counts = Counter(p.key.workload_id[0] for p in decision.placements)
    assert counts == {"x": 1, "y": 3}


def test_aging_lifts_a_long_waiting_low_tier_replica() -> None:
    old_bronze = pending("old", customer="b", tier="bronze", enqueued_at=NOW - 3 * 300.0)
    gold = pending("new", customer="g", tier="gold")
    decision = run([gold, old_bronze], [worker("w1", slots=1)])
    assert where(decision) == {"old/0": "w1"}
    young = run(
        [gold, pending("old", customer="b", tier="bronze", enqueued_at=NOW - 299)],
        [worker("w1", slots=1)],
    )
    assert where(young) == {"new/0": "w1"}


def test_workload_priority_orders_within_a_customer() -> None:
    decision = run(
        [pending("routine", enqueued_at=NOW - 50), pending("urgent", priority=5)],
        [worker("w1", slots=1)],
    )
    assert where(decision) == {"urgent/0": "w1"}


def test_older_replica_first_at_equal_priority() -> None:
    decision = run(
        [pending("newer", enqueued_at=NOW - 1), pending("older", enqueued_at=NOW - 9)],
        [worker("w1", slots=1)],
    )
    assert where(decision) == {"older/0": "w1"}


# -- quotas ----------------------------------------------------------------------------------


def test_customer_concurrency_cap() -> None:
    customers = {"acme": CustomerPolicy("acme", "gold", 4.0, 3)}
    decision = run(
        [pending("a", i) for i in range(3)],
        [worker("w1", slots=10)],
        [running("r", on="w1", customer="acme", tier="gold")],
        customers=customers,
    )
    assert len(decision.placements) == 2
    assert why(decision) == {"a/2": "customer acme at its cap of 3"}


def test_tier_cap_applies_to_customers_without_a_policy() -> None:
    decision = run(
        [pending("a", i, customer="nobody", tier="bronze") for i in range(25)],
        [worker("w1", slots=30)],
    )
    assert len(decision.placements) == 20  # bronze's default concurrency_cap


def _guaranteed_tiers(may_preempt: bool = False) -> dict[str, Tier]:
    return {
        "gold": Tier("gold", 300, guaranteed_slots=2, may_preempt=may_preempt),
        "bronze": Tier("bronze", 100),
    }


def test_guaranteed_slots_are_held_while_the_entitled_tier_waits() -> None:
    # Two gold replicas need 8 cpu that no worker has free; gold's 2 guaranteed slots stay out
    # of bronze's reach while they wait.
    decision = run(
        [
            pending("g", 0, tier="gold", cpu=8.0),
            pending("g", 1, tier="gold", cpu=8.0),
            pending("b", customer="b", tier="bronze", cpu=1.0),
        ],
        [worker("w1", slots=2, cpu=4.0)],
        tiers=_guaranteed_tiers(),
    )
    assert decision.placements == ()
    assert why(decision)["b/0"] == "free slots are held for gold's guaranteed capacity"


def test_lower_tiers_borrow_guaranteed_slots_while_nobody_entitled_waits() -> None:
    decision = run(
        [pending("b", i, customer="b", tier="bronze") for i in range(2)],
        [worker("w1", slots=2)],
        tiers=_guaranteed_tiers(),
    )
    assert len(decision.placements) == 2


def test_an_entitled_tier_reclaims_borrowed_slots_by_preemption() -> None:
    decision = run(
        [pending("g", tier="gold")],
        [worker("w1", slots=2)],
        [running("b1", on="w1"), running("b2", on="w1")],
        tiers=_guaranteed_tiers(may_preempt=False),
    )
    assert len(decision.preemptions) == 1
    assert why(decision) == {"g/0": "preempting 1 lower-tier replica on worker w1"}


def test_guaranteed_slots_a_tier_needed_lately_stay_held_but_are_not_reclaimed() -> None:
    # Gold needed 2 of its guaranteed slots within its linger and runs 1 now: one free slot
    # stays held against bronze; lingering alone preempts nobody, and asks for no more than the
    # guarantee left unused.
    gold_running = running("g1", on="w1", customer="g", tier="gold")
    decision = run(
        [pending("b", i, customer="b", tier="bronze") for i in range(3)],
        [worker("w1", slots=4)],
        [gold_running],
        tiers=_guaranteed_tiers(),
        lingering={"gold": TierUse(slots=2)},
    )
    assert len(decision.placements) == 2
    assert decision.preemptions == ()
    assert why(decision) == {"b/2": "free slots are held for gold's guaranteed capacity"}
    assert decision.tier_demand["gold"] == TierUse(slots=1)
    assert decision.tier_demand["bronze"] == TierUse(slots=2)

    full = run(
        [pending("b", customer="b", tier="bronze")],
        [worker("w1", slots=2)],
        [running("b1", on="w1", customer="b", tier="bronze"), gold_running],
        tiers=_guaranteed_tiers(),
        lingering={"gold": TierUse(slots=5)},
    )
    assert (full.placements, full.preemptions) == ((), ())


def test_a_tier_waiting_for_capacity_needs_what_it_runs_and_what_it_waits_for() -> None:
    decision = run(
        [pending("g2", customer="g", tier="gold")],
        [worker("w1", slots=2)],
        [
            running("g1", on="w1", customer="g", tier="gold"),
            running("b1", on="w1", customer="b", tier="bronze"),
        ],
        tiers=_guaranteed_tiers(),
    )
    assert len(decision.preemptions) == 1  # reclaiming its guarantee
    assert decision.tier_demand["gold"] == TierUse(slots=2)


def test_lingering_use_of_a_tier_is_no_hold_against_itself_or_higher_tiers() -> None:
    tiers = {**_guaranteed_tiers(), "platinum": Tier("platinum", 400)}
    decision = run(
        [pending("g", tier="gold"), pending("p", customer="p", tier="platinum")],
        [worker("w1", slots=2)],
        tiers=tiers,
        lingering={"gold": TierUse(slots=2)},
    )
    assert set(where(decision)) == {"g/0", "p/0"}


def _resource_tiers(cpu: float = 0.0, memory_mb: int = 0) -> dict[str, Tier]:
    return {
        "gold": Tier("gold", 300, guaranteed_cpu=cpu, guaranteed_memory_mb=memory_mb),
        "bronze": Tier("bronze", 100),
    }


def test_guaranteed_cpu_is_held_while_the_entitled_tier_waits() -> None:
    # Gold runs 4 of its 8 guaranteed cores; its waiting replica asks 3, which no worker has
    # free (2 + 2). Bronze may take only what leaves those 3 free; a replica asking no cpu is
    # not held back.
    decision = run(
        [
            pending("g", tier="gold", cpu=3.0),
            pending("b", 0, customer="b", tier="bronze", cpu=1.0),
            pending("b", 1, customer="b", tier="bronze", cpu=1.0),
            pending("z", customer="z", tier="bronze"),
        ],
        [worker("w1", slots=10, cpu=4.0), worker("w2", slots=10, cpu=4.0)],
        [
            running("r1", on="w1", tier="gold", cpu=2.0),
            running("r2", on="w2", tier="gold", cpu=2.0),
        ],
        tiers=_resource_tiers(cpu=8.0),
    )
    assert sorted(where(decision)) == ["b/0", "z/0"]
    assert why(decision)["b/1"] == "free cpu is held for gold's guaranteed capacity (3 cores short)"
    assert why(decision)["g/0"] == "no free capacity for cpu 3"


def test_guaranteed_memory_is_held_while_the_entitled_tier_waits() -> None:
    # Gold is 1024 MB short of its guarantee and waits for 2048: the hold is the shortfall.
    decision = run(
        [
            pending("g", tier="gold", memory_mb=2048),
            pending("b", 0, customer="b", tier="bronze", memory_mb=512),
            pending("b", 1, customer="b", tier="bronze", memory_mb=512),
        ],
        [worker("w1", slots=10, memory_mb=1536), worker("w2", slots=10, memory_mb=1024)],
        [running("r1", on="w2", tier="gold", memory_mb=1024)],
        tiers=_resource_tiers(memory_mb=2048),
    )
    assert list(where(decision)) == ["b/0"]
    assert (
        why(decision)["b/1"] == "free memory is held for gold's guaranteed capacity (1024 MB short)"
    )


def test_lower_tiers_borrow_guaranteed_cpu_and_memory_while_nobody_entitled_waits() -> None:
    decision = run(
        [pending("b", i, customer="b", tier="bronze", cpu=2.0, memory_mb=512) for i in range(4)],
        [worker("w1", slots=4, cpu=8.0, memory_mb=2048)],
        tiers=_resource_tiers(cpu=8.0, memory_mb=2048),
    )
    assert len(decision.placements) == 4


def test_a_tier_at_its_guaranteed_cpu_holds_nothing() -> None:
    decision = run(
        [
            pending("g", tier="gold", cpu=3.0),
            pending("b", customer="b", tier="bronze", cpu=2.0),
        ],
        [worker("w1", slots=10, cpu=4.0)],
        [running("r1", on="w1", tier="gold", cpu=2.0)],
        tiers=_resource_tiers(cpu=2.0),
    )
    assert list(where(decision)) == ["b/0"]


def test_an_entitled_tier_reclaims_borrowed_cpu_by_preemption() -> None:
    # Gold may not preempt, but it is below its guaranteed cpu: it reclaims it from bronze.
    decision = run(
        [pending("g", tier="gold", cpu=2.0)],
        [worker("w1", slots=10, cpu=4.0)],
        [running("b1", on="w1", cpu=2.0), running("b2", on="w1", cpu=2.0)],
        tiers=_resource_tiers(cpu=4.0),
    )
    assert why(decision) == {"g/0": "preempting 1 lower-tier replica on worker w1"}
    no_guarantee = run(
        [pending("g", tier="gold", cpu=2.0)],
        [worker("w1", slots=10, cpu=4.0)],
        [running("b1", on="w1", cpu=2.0), running("b2", on="w1", cpu=2.0)],
        tiers=_resource_tiers(),
    )
    assert no_guarantee.preemptions == ()


def test_unknown_tier_is_reported() -> None:
    decision = run([pending("a", tier="diamond")], [worker("w1")])
    assert why(decision) == {"a/0": "unknown tier diamond"}


# -- preemption ------------------------------------------------------------------------------


def test_preemption_names_the_victim_and_the_replica_it_makes_room_for() -> None:
    decision = run(
        [pending("p", tier="platinum")],
        [worker("w1", slots=1)],
        [running("b", on="w1", tier="bronze")],
    )
    assert [(str(p.victim), p.worker_id, str(p.for_replica)) for p in decision.preemptions] == [
        ("b/0", "w1", "p/0")
    ]
    assert decision.placements == ()


def test_preemption_never_picks_the_same_or_a_higher_tier() -> None:
    decision = run(
        [pending("g", tier="gold")],
        [worker("w1", slots=2)],
        [running("p", on="w1", tier="platinum"), running("g2", on="w1", tier="gold")],
    )
    assert decision.preemptions == ()
    assert why(decision) == {"g/0": "no free capacity"}


def test_tiers_that_may_not_preempt_wait() -> None:
    decision = run(
        [pending("s", customer="s", tier="silver")],
        [worker("w1", slots=1)],
        [running("b", on="w1", tier="bronze")],
    )
    assert decision.preemptions == ()


def test_preemption_takes_the_fewest_victims() -> None:
    # w1 needs two small victims, w2 one large one: fewest wins.
    decision = run(
        [pending("p", tier="platinum", cpu=4.0)],
        [worker("w1", slots=4, cpu=4.0), worker("w2", slots=4, cpu=4.0)],
        [
            running("s1", on="w1", cpu=2.0),
            running("s2", on="w1", cpu=2.0),
            running("big", on="w2", cpu=4.0, tier="silver"),
        ],
    )
    assert [str(p.victim) for p in decision.preemptions] == ["big/0"]


def test_preemption_prefers_lowest_tier_then_youngest_checkpoint() -> None:
    decision = run(
        [pending("p", tier="platinum")],
        [worker("w1", slots=3)],
        [
            running("silver", on="w1", tier="silver", checkpoint_at=NOW - 1),
            running("stale", on="w1", tier="bronze", checkpoint_at=NOW - 500),
            running("fresh", on="w1", tier="bronze", checkpoint_at=NOW - 5),
        ],
    )
    assert [str(p.victim) for p in decision.preemptions] == ["fresh/0"]


def test_preemption_needs_no_more_victims_than_the_shortfall() -> None:
    decision = run(
        [pending("p", tier="platinum", cpu=3.0)],
        [worker("w1", slots=8, cpu=4.0)],
        [running(f"b{i}", on="w1", cpu=1.0) for i in range(4)],
    )
    assert len(decision.preemptions) == 3


def test_preemption_respects_hard_affinity() -> None:
    gpu = Affinity(required=(sel("gpu", SelectorOp.EQ, "true"),))
    decision = run(
        [pending("p", tier="platinum", affinity=gpu)],
        [worker("cpu", slots=1), worker("gpu", slots=1, labels={"gpu": "true"})],
        [running("b1", on="cpu"), running("b2", on="gpu")],
    )
    assert [(str(p.victim), p.worker_id) for p in decision.preemptions] == [("b2/0", "gpu")]


def test_two_preemptors_do_not_share_victims() -> None:
    decision = run(
        [pending("p1", tier="platinum"), pending("p2", tier="platinum", customer="other")],
        [worker("w1", slots=2)],
        [running("b1", on="w1"), running("b2", on="w1")],
    )
    victims = [str(p.victim) for p in decision.preemptions]
    assert sorted(victims) == ["b1/0", "b2/0"]


# -- determinism -----------------------------------------------------------------------------


def test_same_input_same_output_whatever_the_worker_order() -> None:
    workers = [worker(f"w{i}", slots=2, labels={"zone": "ab"[i % 2]}) for i in range(6)]
    reps = [pending(f"r{i}", customer=f"c{i % 3}") for i in range(10)]
    first = run(reps, workers)
    assert run(reps, workers) == first
    assert run(reps, list(reversed(workers))) == first


def test_named_worker_refusals_are_explained() -> None:
    decision = run(
        [
            pending("drained", affinity=Affinity(worker="w1")),
            pending("wrong-type", type_name="train", affinity=Affinity(worker="w2")),
            pending("full", affinity=Affinity(worker="w3")),
        ],
        [worker("w1", schedulable=False), worker("w2"), worker("w3", slots=0)],
    )
    assert why(decision) == {
        "drained/0": "worker w1 is draining or cordoned",
        "wrong-type/0": "worker w2 does not run type train",
        "full/0": "no free capacity",
    }


def test_a_preemptor_can_displace_replicas_on_its_named_worker() -> None:
    decision = run(
        [pending("p", tier="platinum", affinity=Affinity(worker="w2"))],
        [worker("w1", slots=1), worker("w2", slots=1)],
        [running("b1", on="w1"), running("b2", on="w2")],
    )
    assert [(str(p.victim), p.worker_id) for p in decision.preemptions] == [("b2/0", "w2")]


def test_a_constraint_that_nothing_meets_is_reported_before_held_slots() -> None:
    gpu = Affinity(required=(sel("gpu", SelectorOp.EQ, "true"),))
    decision = run(
        [
            pending("g", tier="gold", cpu=8.0),
            pending("b", customer="b", tier="bronze", affinity=gpu),
        ],
        [worker("w1", slots=1, cpu=4.0)],
        tiers=_guaranteed_tiers(),
    )
    assert why(decision)["b/0"] == "no worker with gpu=true"


def test_preempted_capacity_is_not_given_to_anyone_else_in_the_round() -> None:
    # Platinum needs 2 cpu: 1 is free and 1 comes from its victim; bronze may not take the
    # free one meanwhile.
    decision = run(
        [
            pending("p", tier="platinum", cpu=2.0),
            pending("b", customer="b", tier="bronze", cpu=1.0),
        ],
        [worker("w1", slots=4, cpu=2.0)],
        [running("old", on="w1", cpu=1.0)],
    )
    assert [str(p.victim) for p in decision.preemptions] == ["old/0"]
    assert decision.placements == ()


@pytest.mark.parametrize(
    ("selector", "reason"),
    [
        (sel("gpu", SelectorOp.EQ, "true"), "no worker with gpu=true"),
        (sel("zone", SelectorOp.IN, "x", "y"), "no worker with zone in (x, y)"),
        (sel("pool", SelectorOp.NE, "std"), "no worker with pool!=std"),
        (sel("pool", SelectorOp.NOT_IN, "std", "big"), "no worker with pool not in (std, big)"),
        (sel("ssd", SelectorOp.EXISTS), "no worker with label ssd"),
        (sel("pool", SelectorOp.DOES_NOT_EXIST), "no worker without label pool"),
    ],
)
def test_unmet_selectors_read_as_sentences(selector: LabelSelector, reason: str) -> None:
    decision = run(
        [pending("a", affinity=Affinity(required=(selector,)))],
        [worker("w1", labels={"pool": "std", "zone": "a"})],
    )
    assert why(decision) == {"a/0": reason}


def test_selectors_met_only_separately_are_reported_together() -> None:
    both = Affinity(required=(sel("gpu", SelectorOp.EQ, "true"), sel("zone", SelectorOp.EQ, "a")))
    decision = run(
        [pending("a", affinity=both)],
        [worker("w1", labels={"gpu": "true", "zone": "b"}), worker("w2", labels={"zone": "a"})],
    )
    assert why(decision) == {"a/0": "no worker with gpu=true, zone=a"}
