"""Scheduler round time: 10k and 20k pending replicas on 1,000 workers, against a naive baseline.

Cluster (seeded): 1,000 workers over 30 label combinations (zone x pool x gpu), 200 customers
over the 4 default tiers, 20% of replicas with hard affinity, 10% with anti-affinity, 5% with
soft affinity, 10% with a previous worker. The naive baseline filters and scores every worker
for every replica, in the same tier order, with no indexes.

Run: .venv/bin/python bench/scheduler.py  (last line: one JSON object with the figures)
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import time

from niyanta.model import (
    DEFAULT_TIERS,
    Affinity,
    LabelSelector,
    PreferredSelector,
    ReplicaKey,
    Resources,
    SelectorOp,
)
from niyanta.scheduler import (
    CustomerPolicy,
    PendingReplica,
    SchedulerDecision,
    SchedulerInput,
    WorkerView,
    schedule,
)
from niyanta.scheduler.scoring import STICKINESS

WORKERS = 1_000
CUSTOMERS = 200
ZONES = ("a", "b", "c")
POOLS = ("general", "batch", "compliance", "spot", "edge")
TYPES = ("etl", "report", "train")
APPS = tuple(f"app-{n}" for n in range(50))
HARD = (
    (LabelSelector("gpu", SelectorOp.EQ, ("true",)),),
    (LabelSelector("zone", SelectorOp.IN, ("a", "b")),),
    (LabelSelector("pool", SelectorOp.EQ, ("compliance",)),),
    (LabelSelector("pool", SelectorOp.NOT_IN, ("spot", "edge")),),
    (LabelSelector("zone", SelectorOp.EQ, ("c",)), LabelSelector("gpu", SelectorOp.NE, ("true",))),
)
SOFT = (
    (PreferredSelector(LabelSelector("zone", SelectorOp.EQ, ("b",)), 5),),
    (PreferredSelector(LabelSelector("pool", SelectorOp.IN, ("batch", "spot")), 3),),
)
CAPS = {"platinum": None, "gold": 200, "silver": 100, "bronze": 60}
REPEATS = 7


def build_input(pending_count: int, seed: int = 7) -> SchedulerInput:
    rng = random.Random(seed)
    combos = [(z, p, g) for z in ZONES for p in POOLS for g in ("true", "false")]
    workers = []
    for n in range(WORKERS):
        zone, pool, gpu = combos[n % len(combos)]
        types = frozenset(TYPES if gpu == "true" else TYPES[:2])
        workers.append(
            WorkerView(
                f"w{n:04d}",
                {"zone": zone, "pool": pool, "gpu": gpu},
                types,
                slots=16,
                cpu=32.0,
                memory_mb=65_536,
            )
        )
    tiers = {t.name: t for t in DEFAULT_TIERS}
    customers = {}
    for n in range(CUSTOMERS):
        tier = DEFAULT_TIERS[n % len(DEFAULT_TIERS)]
        customers[f"c{n:03d}"] = CustomerPolicy(
            f"c{n:03d}", tier.name, tier.weight, CAPS[tier.name]
        )
    pending: list[PendingReplica] = []
    workload = 0
    while len(pending) < pending_count:
        customer = customers[f"c{rng.randrange(CUSTOMERS):03d}"]
        workload += 1
        roll = rng.random()
        affinity = Affinity()
        if roll < 0.20:
            affinity = Affinity(required=rng.choice(HARD))
        elif roll < 0.30:
            affinity = Affinity(anti=(LabelSelector("app", SelectorOp.EQ, (rng.choice(APPS),)),))
        elif roll < 0.35:
            affinity = Affinity(preferred=rng.choice(SOFT))
        type_name = "train" if affinity.required == HARD[0] else rng.choice(TYPES[:2])
        resources = Resources(rng.choice((0.5, 1.0, 2.0)), rng.choice((256, 512, 1024)))
        labels = {"app": rng.choice(APPS)}
        for index in range(rng.randint(1, 4)):
            previous = f"w{rng.randrange(WORKERS):04d}" if rng.random() < 0.1 else None
            pending.append(
                PendingReplica(
                    ReplicaKey(f"wl{workload:06d}", index),
                    customer.id,
                    customer.tier,
                    type_name,
                    resources,
                    affinity,
                    priority=rng.randrange(3),
                    enqueued_at=900.0 + rng.random() * 100.0,
                    previous_worker=previous,
                    workload_labels=labels,
                )
            )
    return SchedulerInput(
        tuple(pending[:pending_count]), tuple(workers), (), tiers, customers, 1000.0
    )


def naive_round(inp: SchedulerInput) -> int:
    """Place in tier order by filtering and scoring every worker for every replica."""
    free = {w.id: [w.slots, w.cpu, float(w.memory_mb)] for w in inp.workers}
    beside: dict[str, list[dict[str, str]]] = {w.id: [] for w in inp.workers}
    held: dict[str, int] = {}
    order = sorted(
        inp.pending, key=lambda r: (-inp.tiers[r.tier].priority, -r.priority, r.enqueued_at)
    )
    placed = 0
    for replica in order:
        cap = inp.customers[replica.customer_id].concurrency_cap
        if cap is not None and held.get(replica.customer_id, 0) >= cap:
            continue
        best: tuple[float, float, str] | None = None
        for worker in inp.workers:
            slots, cpu, memory = free[worker.id]
            if (
                slots < 1
                or cpu < replica.resources.cpu
                or memory < replica.resources.memory_mb
                or replica.type_name not in worker.types
                or not all(s.matches(worker.labels) for s in replica.affinity.required)
                or any(
                    s.matches(labels) for s in replica.affinity.anti for labels in beside[worker.id]
                )
            ):
                continue
            score = sum(
                p.weight for p in replica.affinity.preferred if p.selector.matches(worker.labels)
            )
            if replica.previous_worker == worker.id:
                score += STICKINESS
            used = max(
                1 - slots / worker.slots, 1 - cpu / worker.cpu, 1 - memory / worker.memory_mb
            )
            candidate = (-score, used, worker.id)
            if best is None or candidate < best:
                best = candidate
        if best is None:
            continue
        entry = free[best[2]]
        entry[0] -= 1
        entry[1] -= replica.resources.cpu
        entry[2] -= replica.resources.memory_mb
        beside[best[2]].append(dict(replica.workload_labels))
        held[replica.customer_id] = held.get(replica.customer_id, 0) + 1
        placed += 1
    return placed


def main() -> None:
    inputs = {"10k": build_input(10_000), "20k": build_input(20_000)}
    wall: dict[str, list[float]] = {label: [] for label in inputs}
    cpu: dict[str, list[float]] = {label: [] for label in inputs}
    decisions: dict[str, SchedulerDecision] = {}
    # Rounds alternate between the two sizes so that load from other processes on the machine
    # weighs on both alike; cpu time (this process only) is reported beside wall time. Each
    # round starts from a collected heap, with the previous decision already freed, so that no
    # round pays for another's garbage (the garbage collector stays on during the round).
    for _ in range(REPEATS):
        for label, inp in inputs.items():
            decisions.pop(label, None)
            gc.collect()
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            decisions[label] = schedule(inp)
            wall[label].append((time.perf_counter() - wall_start) * 1000)
            cpu[label].append((time.process_time() - cpu_start) * 1000)
    figures: dict[str, float] = {}
    for label, inp in inputs.items():
        figures[f"round_ms_{label}"] = round(statistics.median(wall[label]), 1)
        figures[f"round_cpu_ms_{label}"] = round(statistics.median(cpu[label]), 1)
        print(
            f"round, {len(inp.pending)} pending on {WORKERS} workers: median of {REPEATS} "
            f"{figures[f'round_ms_{label}']} ms wall, {figures[f'round_cpu_ms_{label}']} ms cpu; "
            f"placed {len(decisions[label].placements)}, left pending "
            f"{len(decisions[label].pending)}"
        )
    figures["growth_20k_over_10k"] = round(figures["round_ms_20k"] / figures["round_ms_10k"], 2)
    naive_input = inputs["10k"]
    start = time.perf_counter()
    naive_placed = naive_round(naive_input)
    naive_ms = (time.perf_counter() - start) * 1000
    print(f"naive baseline, 10000 pending: {naive_ms:.0f} ms (one run), placed {naive_placed}")
    figures["naive_round_ms_10k"] = round(naive_ms, 1)
    figures["speedup_over_naive_10k"] = round(naive_ms / figures["round_ms_10k"], 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
