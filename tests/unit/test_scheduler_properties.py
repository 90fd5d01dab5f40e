"""Properties of a round over random clusters: what no decision may ever do."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

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

TIERS = {t.name: t for t in DEFAULT_TIERS}
NOW = 5_000.0
NO_AGING = 1e12
CUSTOMERS = ("c0", "c1", "c2", "c3", "c4")
AFFINITIES = (
    Affinity(),
    Affinity(),
    Affinity(required=(LabelSelector("gpu", SelectorOp.EQ, ("true",)),)),
    Affinity(required=(LabelSelector("zone", SelectorOp.IN, ("a",)),)),
    Affinity(required=(LabelSelector("zone", SelectorOp.DOES_NOT_EXIST),)),
    Affinity(anti=(LabelSelector("app", SelectorOp.EQ, ("db",)),)),
    Affinity(spread="worker"),
    Affinity(spread="zone"),
    Affinity(preferred=(PreferredSelector(LabelSelector("zone", SelectorOp.EQ, ("b",)), 3),)),
    Affinity(worker="w0"),
)
WAITING_REASONS = ("no free capacity", "waiting behind", "preempting")
"""Reasons of a replica left pending for want of capacity (it counts as waiting)."""
CAPACITY_REASONS = (
    *WAITING_REASONS,
    "free slots are held",
    "free cpu is held",
    "free memory is held",
)


@st.composite
def rounds(draw: st.DrawFn) -> SchedulerInput:
    workers = []
    for n in range(draw(st.integers(1, 6))):
        labels = {}
        zone = draw(st.sampled_from(["a", "b", None]))
        if zone is not None:
            labels["zone"] = zone
        if draw(st.booleans()):
            labels["gpu"] = "true"
        workers.append(
            WorkerView(
                f"w{n}",
                labels,
                frozenset(draw(st.sampled_from([("job",), ("job", "train"), ("train",)]))),
                draw(st.integers(0, 4)),
                draw(st.sampled_from([0.0, 2.0, 4.0])),
                draw(st.sampled_from([0, 1024])),
                draw(st.sampled_from([True, True, True, False])),
            )
        )
    customer_tier = {c: draw(st.sampled_from(sorted(TIERS))) for c in CUSTOMERS}
    customers = {
        c: CustomerPolicy(
            c,
            customer_tier[c],
            float(draw(st.integers(1, 4))),
            draw(st.one_of(st.none(), st.integers(0, 6))),
        )
        for c in CUSTOMERS
    }
    running = []
    for n in range(draw(st.integers(0, 12))):
        on = draw(st.sampled_from(workers))
        customer = draw(st.sampled_from(CUSTOMERS))
        resources = Resources(
            draw(st.sampled_from([0.0, 0.5, 1.0])), draw(st.sampled_from([0, 256]))
        )
        if not _fits(on, [r for r in running if r.worker_id == on.id], resources):
            continue
        running.append(
            RunningReplica(
                ReplicaKey(f"run{n}", 0),
                customer,
                customer_tier[customer],
                on.id,
                resources,
                {"app": draw(st.sampled_from(["db", "web"]))},
                last_checkpoint_at=draw(st.one_of(st.none(), st.floats(0, NOW))),
            )
        )
    pending = []
    workload_affinity = {w: draw(st.sampled_from(AFFINITIES)) for w in range(5)}
    indexes: Counter[int] = Counter()
    for _ in range(draw(st.integers(0, 25))):
        workload = draw(st.integers(0, 4))
        customer = CUSTOMERS[workload]
        indexes[workload] += 1
        pending.append(
            PendingReplica(
                ReplicaKey(f"wl{workload}", indexes[workload]),
                customer,
                customer_tier[customer],
                draw(st.sampled_from(["job", "train"])),
                Resources(
                    draw(st.sampled_from([0.0, 0.5, 1.0, 3.0])), draw(st.sampled_from([0, 512]))
                ),
                workload_affinity[workload],
                priority=draw(st.integers(0, 2)),
                enqueued_at=NOW - draw(st.integers(0, 100)),
                previous_worker=draw(st.one_of(st.none(), st.sampled_from(["w0", "w1"]))),
                workload_labels={"app": draw(st.sampled_from(["db", "web"]))},
            )
        )
    policy = draw(st.sampled_from(list(ScoringPolicy)))
    return SchedulerInput(
        tuple(pending), tuple(workers), tuple(running), TIERS, customers, NOW, policy, NO_AGING
    )


def _fits(worker: WorkerView, on_it: Sequence[object], resources: Resources) -> bool:
    used = [r for r in on_it if isinstance(r, RunningReplica | PendingReplica)]
    cpu = sum(r.resources.cpu for r in used) + resources.cpu
    memory = sum(r.resources.memory_mb for r in used) + resources.memory_mb
    return (
        len(used) < worker.slots
        and (worker.cpu == 0 or cpu <= worker.cpu + 1e-9)
        and (worker.memory_mb == 0 or memory <= worker.memory_mb)
    )


def _occupants(inp: SchedulerInput, decision: SchedulerDecision) -> dict[str, list[object]]:
    """Per worker, the running replicas then the placed ones in decision order."""
    by_key = {p.key: p for p in inp.pending}
    on: dict[str, list[object]] = defaultdict(list)
    for r in inp.running:
        on[r.worker_id].append(r)
    for placement in decision.placements:
        on[placement.worker_id].append(by_key[placement.key])
    return on


@settings(max_examples=150, deadline=None)
@given(rounds())
def test_no_placement_breaks_capacity_affinity_spread_or_caps(inp: SchedulerInput) -> None:
    decision = schedule(inp)
    workers = {w.id: w for w in inp.workers}
    by_key = {p.key: p for p in inp.pending}
    placed_keys = [p.key for p in decision.placements]
    assert len(set(placed_keys)) == len(placed_keys)
    assert set(placed_keys) | {p.key for p in decision.pending} == set(by_key)
    assert not set(placed_keys) & {p.key for p in decision.pending}
    on = _occupants(inp, decision)
    for wid, occupants in on.items():
        placed_here = [o for o in occupants if isinstance(o, PendingReplica)]
        if not placed_here:
            continue
        worker = workers[wid]
        assert worker.schedulable
        assert _fits(worker, occupants[:-1], placed_here[-1].resources)  # capacity, all dims
    for placement in decision.placements:
        replica, worker = by_key[placement.key], workers[placement.worker_id]
        assert placement.fence == replica.fence
        affinity = replica.affinity
        assert replica.type_name in worker.types
        assert all(s.matches(worker.labels) for s in affinity.required)
        assert affinity.worker in (None, worker.id)
        before = on[worker.id][: on[worker.id].index(replica)]
        for other in before:
            labels: Mapping[str, str] = other.workload_labels  # type: ignore[attr-defined]
            assert not any(s.matches(labels) for s in affinity.anti)
        if affinity.spread is not None:
            _assert_spread(inp, decision, replica, affinity.spread)
    held = Counter(r.customer_id for r in inp.running)
    added = Counter(by_key[k].customer_id for k in placed_keys)
    for customer, count in added.items():
        cap = inp.customers[customer].concurrency_cap
        assert cap is None or held[customer] + count <= cap


def _assert_spread(
    inp: SchedulerInput, decision: SchedulerDecision, replica: PendingReplica, key: str
) -> None:
    workers = {w.id: w for w in inp.workers}
    wid = replica.key.workload_id
    order = [p for p in decision.placements if p.key.workload_id == wid]
    mine = next(p for p in order if p.key == replica.key)
    earlier = [p.worker_id for p in order[: order.index(mine)]]
    earlier += [r.worker_id for r in inp.running if r.key.workload_id == wid]

    def where(worker_id: str) -> str | None:
        return worker_id if key == "worker" else workers[worker_id].labels.get(key)

    assert where(mine.worker_id) is not None
    assert where(mine.worker_id) not in {where(w) for w in earlier if w in workers}


@settings(max_examples=100, deadline=None)
@given(rounds())
def test_same_input_same_output(inp: SchedulerInput) -> None:
    first = schedule(inp)
    assert schedule(inp) == first
    shuffled = SchedulerInput(
        inp.pending,
        tuple(reversed(inp.workers)),
        tuple(reversed(inp.running)),
        inp.tiers,
        inp.customers,
        inp.now,
        inp.policy,
        inp.aging_s,
    )
    assert schedule(shuffled) == first


@settings(max_examples=150, deadline=None)
@given(rounds())
def test_no_higher_tier_waits_while_a_lower_tier_takes_a_slot_it_could_use(
    inp: SchedulerInput,
) -> None:
    decision = schedule(inp)
    by_key = {p.key: p for p in inp.pending}
    workers = {w.id: w for w in inp.workers}
    on = _occupants(inp, decision)
    waiting = [
        by_key[p.key]
        for p in decision.pending
        if p.reason.startswith(CAPACITY_REASONS)
        and not by_key[p.key].affinity.anti
        and by_key[p.key].affinity.spread is None
    ]
    # Free capacity a preemptor claimed on its victims' worker is invisible here: skip those.
    claimed = {p.worker_id for p in decision.preemptions}
    for placement in decision.placements:
        lower = by_key[placement.key]
        worker = workers[placement.worker_id]
        if worker.id in claimed:
            continue
        others = [o for o in on[worker.id] if o is not lower]
        for higher in waiting:
            if TIERS[higher.tier].priority <= TIERS[lower.tier].priority:
                continue
            usable = (
                higher.type_name in worker.types
                and all(s.matches(worker.labels) for s in higher.affinity.required)
                and higher.affinity.worker in (None, worker.id)
                and _fits(worker, others, higher.resources)
            )
            assert not usable, f"{lower.key} ({lower.tier}) took {worker.id} from {higher.key}"


@settings(max_examples=150, deadline=None)
@given(rounds())
def test_preemption_picks_only_lower_tiers_and_no_more_victims_than_needed(
    inp: SchedulerInput,
) -> None:
    decision = schedule(inp)
    by_key = {p.key: p for p in inp.pending}
    running = {r.key: r for r in inp.running}
    victims = [p.victim for p in decision.preemptions]
    assert len(set(victims)) == len(victims)
    groups: dict[ReplicaKey, list[RunningReplica]] = defaultdict(list)
    worker_of: dict[ReplicaKey, str] = {}
    for p in decision.preemptions:
        victim, preemptor = running[p.victim], by_key[p.for_replica]
        assert victim.worker_id == p.worker_id
        assert TIERS[victim.tier].priority < TIERS[preemptor.tier].priority
        assert preemptor.key not in {q.key for q in decision.placements}
        groups[preemptor.key].append(victim)
        worker_of[preemptor.key] = p.worker_id
    # Replay, on workers nobody was placed on (so their free capacity is known at each step):
    # a preemptor takes what victims (and earlier victims' surplus) free, then free capacity.
    placed_on = {p.worker_id for p in decision.placements}
    free = {w.id: _free_at_start(inp, w) for w in inp.workers}
    surplus: dict[str, Vector] = defaultdict(lambda: (0.0, 0.0, 0.0))
    for key, chosen in groups.items():
        wid = worker_of[key]
        if wid in placed_on:
            continue
        res = by_key[key].resources
        need = (1.0, res.cpu, float(res.memory_mb))
        freed = _sum(chosen)
        short = tuple(n - f - s for n, f, s in zip(need, free[wid], surplus[wid], strict=True))
        assert _covers(freed, short)
        for victim in chosen:
            assert not _covers(_sum([v for v in chosen if v is not victim]), short)
        gained = tuple(s + f for s, f in zip(surplus[wid], freed, strict=True))
        from_free = tuple(max(0.0, n - g) for n, g in zip(need, gained, strict=True))
        free[wid] = tuple(f - t for f, t in zip(free[wid], from_free, strict=True))  # type: ignore[assignment]
        surplus[wid] = tuple(max(0.0, g - n) for g, n in zip(gained, need, strict=True))  # type: ignore[assignment]


Vector = tuple[float, float, float]
"""(slots, cpu, memory)."""


def _free_at_start(inp: SchedulerInput, worker: WorkerView) -> Vector:
    used = _sum([r for r in inp.running if r.worker_id == worker.id])
    unlimited = float("inf")
    return (
        worker.slots - used[0],
        worker.cpu - used[1] if worker.cpu else unlimited,
        worker.memory_mb - used[2] if worker.memory_mb else unlimited,
    )


def _sum(replicas: Sequence[RunningReplica]) -> Vector:
    return (
        float(len(replicas)),
        sum(r.resources.cpu for r in replicas),
        float(sum(r.resources.memory_mb for r in replicas)),
    )


def _covers(freed: Vector, short: tuple[float, ...]) -> bool:
    return all(f >= s - 1e-9 for f, s in zip(freed, short, strict=True))


@settings(max_examples=150, deadline=None)
@given(
    weights=st.lists(st.integers(1, 6), min_size=2, max_size=6),
    slots=st.lists(st.integers(1, 12), min_size=1, max_size=3),
)
def test_contended_capacity_is_shared_in_proportion_to_weight(
    weights: list[int], slots: list[int]
) -> None:
    customers = {
        f"c{i}": CustomerPolicy(f"c{i}", "gold", float(w), None) for i, w in enumerate(weights)
    }
    capacity = sum(slots)
    pending = [
        PendingReplica(ReplicaKey(f"{c}-{n}", 0), c, "gold", "job", Resources())
        for c in customers
        for n in range(capacity + 1)
    ]
    workers = [WorkerView(f"w{i}", {}, frozenset({"job"}), s) for i, s in enumerate(slots)]
    inp = SchedulerInput(tuple(pending), tuple(workers), (), TIERS, customers, NOW)
    decision = schedule(inp)
    assert len(decision.placements) == capacity
    got = Counter(p.key.workload_id.split("-")[0] for p in decision.placements)
    total = sum(weights)
    for i, weight in enumerate(weights):
        share = capacity * weight / total
        assert abs(got[f"c{i}"] - share) <= 1.0 + 1e-9, (got, share)


# -- guaranteed capacity ---------------------------------------------------------------------


def _without_guarantees(tiers: Mapping[str, Tier]) -> dict[str, Tier]:
    return {
        n: replace(t, guaranteed_slots=0, guaranteed_cpu=0.0, guaranteed_memory_mb=0)
        for n, t in tiers.items()
    }


@settings(max_examples=150, deadline=None)
@given(rounds(), st.data())
def test_with_nobody_entitled_waiting_guarantees_change_no_decision(
    inp: SchedulerInput, data: st.DataObject
) -> None:
    tiers = {
        n: replace(
            t,
            guaranteed_slots=data.draw(st.integers(0, 2)),
            guaranteed_cpu=data.draw(st.sampled_from([0.0, 1.0, 2.5])),
            guaranteed_memory_mb=data.draw(st.sampled_from([0, 512])),
        )
        for n, t in TIERS.items()
    }
    guaranteed = replace(inp, tiers=tiers)
    decision = schedule(guaranteed)
    by_key = {p.key: p for p in inp.pending}
    entitled_waits = any(
        p.reason.startswith(WAITING_REASONS)
        and tiers[by_key[p.key].tier] != _without_guarantees(tiers)[by_key[p.key].tier]
        for p in decision.pending
    )
    if not entitled_waits:
        assert decision == schedule(replace(inp, tiers=_without_guarantees(tiers)))


GOLD_CPU, GOLD_MEMORY = 3.0, 1024
RESOURCE_TIERS = {
    "gold": Tier("gold", 300, guaranteed_cpu=GOLD_CPU, guaranteed_memory_mb=GOLD_MEMORY),
    "bronze": Tier("bronze", 100),
}


@st.composite
def resource_rounds(draw: st.DrawFn) -> SchedulerInput:
    """Gold (guaranteed cpu and memory, may not preempt) and bronze on workers that account
    both, with slots to spare: only cpu and memory are ever short."""
    workers = [
        WorkerView(
            f"w{n}",
            {},
            frozenset({"job"}),
            40,
            draw(st.sampled_from([2.0, 4.0])),
            draw(st.sampled_from([1024, 2048])),
        )
        for n in range(draw(st.integers(1, 3)))
    ]
    running: list[RunningReplica] = []
    for n in range(draw(st.integers(0, 4))):
        on = draw(st.sampled_from(workers))
        resources = Resources(draw(st.sampled_from([0.5, 1.0])), draw(st.sampled_from([0, 512])))
        if _fits(on, [r for r in running if r.worker_id == on.id], resources):
            running.append(RunningReplica(ReplicaKey(f"run{n}", 0), "g", "gold", on.id, resources))
    pending = []
    for n in range(draw(st.integers(0, 12))):
        customer = draw(st.sampled_from(["g", "b"]))
        cpus, memories = (
            ([0.5, 1.0, 3.0, 5.0], [0, 256, 1536])
            if customer == "g"
            else (
                [0.0, 0.5, 1.0],
                [0, 256],
            )
        )
        resources = Resources(draw(st.sampled_from(cpus)), draw(st.sampled_from(memories)))
        tier = "gold" if customer == "g" else "bronze"
        pending.append(PendingReplica(ReplicaKey(f"p{n}", 0), customer, tier, "job", resources))
    customers = {
        "g": CustomerPolicy("g", "gold", 1.0, None),
        "b": CustomerPolicy("b", "bronze", 1.0, None),
    }
    return SchedulerInput(
        tuple(pending),
        tuple(workers),
        tuple(running),
        RESOURCE_TIERS,
        customers,
        NOW,
        aging_s=NO_AGING,
    )


@settings(max_examples=200, deadline=None)
@given(resource_rounds())
def test_a_lower_tier_never_takes_held_cpu_or_memory_while_the_entitled_tier_waits(
    inp: SchedulerInput,
) -> None:
    decision = schedule(inp)
    by_key = {p.key: p for p in inp.pending}
    placed = [by_key[p.key] for p in decision.placements]
    gold_placed = [r for r in placed if r.tier == "gold"]
    bronze_placed = [r for r in placed if r.tier == "bronze"]
    waiting = [
        by_key[p.key]
        for p in decision.pending
        if by_key[p.key].tier == "gold" and p.reason.startswith(WAITING_REASONS)
    ]
    if not waiting:
        assert not any("held" in p.reason for p in decision.pending)
        return
    gold = [*inp.running, *gold_placed]
    for total, asked, guarantee in (
        (sum(w.cpu for w in inp.workers), lambda r: r.resources.cpu, GOLD_CPU),
        (sum(w.memory_mb for w in inp.workers), lambda r: r.resources.memory_mb, GOLD_MEMORY),
    ):
        shortfall = min(guarantee - sum(map(asked, gold)), sum(map(asked, waiting)))
        free_at_end = total - sum(map(asked, [*gold, *bronze_placed]))
        if shortfall > 0 and sum(map(asked, bronze_placed)) > 0:
            assert free_at_end >= shortfall - 1e-9
