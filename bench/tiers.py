"""Tiers under load, on the in-process fleet of the tier tests (coordinator on SQLite and the
in-memory broker, real workers, one process; ``tests/integration/tier_fleet.py``):

- platinum waits: 50 platinum workloads at a steady rate on an idle 3x4 fleet, then again
  while one bronze customer's flood of 2,000 fills it. The queue wait (submit to placement, the
  ``replica.scheduled`` event, as the queue-wait metric and the SLO count it) gives
  ``platinum_wait_ratio`` = flood p95 / idle p95. An arrival of a higher tier than anything
  waiting is placed by its own submit (``SchedulingLoop.submit``) and queues 0 s: when neither
  phase's p95 queued at all the ratio is 1.0 (equal), when only the idle one did not it is
  null. Beside it, the wait until started (submit to running on a worker: ``started_at``
  minus the enqueue), which placement by the submit does not make 0:
  ``platinum_start_wait_ratio``. Baseline: the same 50 submitted by the flooding customer
  itself, who has no tier or fair share to lift them, so they queue behind the flood
  (``fifo_flood_p95_s``, until started);
- fair share: three gold customers with weights 1/1/2 flooding a full 2x4 fleet; the share of
  slot-time each holds over a window, and the largest relative deviation from 25/25/50;
- preemption: a platinum workload arriving at a fleet full of bronze, seconds from submit to
  running on a worker (``preempt_start_s``, median of 5), against the same arrival with
  preemption turned off (``no_preempt_start_s``: it waits for a bronze workload to end).

Run: .venv/bin/python bench/tiers.py [--quick]  (last line: one JSON object with the figures)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tier fleet lives in tests/

from tests.integration.tier_fleet import (
    Fleet,
    Waits,
    fleet,
    full_of,
    largest_relative_error,
    p95,
    sample_while,
    shares,
    start_wait,
    steady_stream,
)

PLATINUM = 50
PLATINUM_EVERY_S = 0.05
BRONZE_STEPS, BRONZE_STEP_S = 1, 0.15
WEIGHTS = {"g1": 1, "g2": 1, "g4": 2}
WANTED_SHARES = {"g1": 0.25, "g2": 0.25, "g4": 0.5}
PREEMPT_TRIALS = 5


def _summary(label: str, waits: Waits) -> str:
    return (
        f"{label}: until started p50 {statistics.median(waits.started) * 1000:.2f} ms, "
        f"p95 {p95(waits.started) * 1000:.2f} ms; queued p95 {p95(waits.queued) * 1000:.2f} ms "
        f"({sum(1 for w in waits.queued if w == 0)} of {len(waits.queued)} placed by their submit)"
    )


async def platinum_waits(flood: int) -> dict[str, float | None]:
    with tempfile.TemporaryDirectory() as directory:
        async with fleet(Path(directory), workers=3, slots=4) as f:
            await f.customer("plat", "platinum")
            await f.customer("bulk", "bronze")
            idle = await steady_stream(f, "plat", PLATINUM, PLATINUM_EVERY_S, 2, 0.02)
            print(_summary("platinum on an idle fleet", idle))
            started = time.monotonic()
            await f.submit_many("bulk", flood, BRONZE_STEPS, BRONZE_STEP_S)
            print(f"bronze flood: {flood} submitted in {time.monotonic() - started:.1f} s")
            loaded = await steady_stream(f, "plat", PLATINUM, PLATINUM_EVERY_S, 2, 0.02)
            print(_summary("platinum under the flood", loaded))
    with tempfile.TemporaryDirectory() as directory:
        async with fleet(Path(directory), workers=3, slots=4) as f:
            await f.customer("bulk", "bronze")
            await f.submit_many("bulk", flood, BRONZE_STEPS, BRONZE_STEP_S)
            fifo = await steady_stream(f, "bulk", PLATINUM, PLATINUM_EVERY_S, 2, 0.02)
            print(f"baseline, the same 50 queued behind the flood: p95 {p95(fifo.started):.3f} s")
    return {
        "platinum_idle_queued_p95_s": p95(idle.queued),
        "platinum_flood_queued_p95_s": p95(loaded.queued),
        "platinum_wait_ratio": _ratio(p95(loaded.queued), p95(idle.queued)),
        "platinum_idle_p50_s": statistics.median(idle.started),
        "platinum_idle_p95_s": p95(idle.started),
        "platinum_flood_p50_s": statistics.median(loaded.started),
        "platinum_flood_p95_s": p95(loaded.started),
        "platinum_start_wait_ratio": p95(loaded.started) / p95(idle.started),
        "fifo_flood_p95_s": p95(fifo.started),
    }


def _ratio(flooded: float, idle: float) -> float | None:
    """``flooded / idle``; 1.0 when both are 0 (neither queued), None when only ``idle`` is."""
    if idle > 0:
        return flooded / idle
    return 1.0 if flooded == 0 else None


async def fair_share(window_s: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as directory:
        async with fleet(Path(directory), workers=2, slots=4) as f:
            for customer, weight in WEIGHTS.items():
                await f.customer(customer, "gold", weight=weight)
            backlog = int(window_s * 8 / 0.5) + 20  # more than a full fleet gets through
            for customer in WEIGHTS:
                await f.submit_many(customer, backlog, steps=5, step_s=0.1)
            await asyncio.sleep(1.0)
            samples = await sample_while(f, window_s=window_s, every_s=0.05)
    measured = shares(samples, list(WEIGHTS))
    error = largest_relative_error(measured, WANTED_SHARES)
    print(
        "fair share over "
        f"{window_s:g} s: "
        + ", ".join(f"{c} {measured[c]:.3f}" for c in WEIGHTS)
        + f" (largest relative error {error:.3f})"
    )
    return {"shares": measured, "fair_share_error": error}


async def _start_at_full_fleet(f: Fleet, trial: int) -> float:
    bronze = await full_of(f, f"bulk{trial}", 4, steps=60, step_s=0.05)
    await asyncio.sleep(0.3)
    platinum = await f.submit(f"plat{trial}", steps=1, step_s=0.01)
    [done] = await f.finished([platinum], within=60)
    for workload_id in bronze:
        await f.running.client.post(f"/v1/workloads/{workload_id}/cancel")
    return start_wait(done)


async def preemption(trials: int) -> dict[str, float]:
    figures = {}
    for label, may_preempt in (("preempt_start_s", True), ("no_preempt_start_s", False)):
        with tempfile.TemporaryDirectory() as directory:
            async with fleet(Path(directory), workers=2, slots=2) as f:
                if not may_preempt:
                    tier = {"priority": 400, "weight": 8, "may_preempt": False}
                    await f.running.client.put("/v1/tiers/platinum", json=tier)
                starts = []
                for trial in range(trials):
                    await f.customer(f"bulk{trial}", "bronze")
                    await f.customer(f"plat{trial}", "platinum")
                    starts.append(await _start_at_full_fleet(f, trial))
        figures[label] = statistics.median(starts)
        figures[label[: -len("_s")] + "_max_s"] = max(starts)
        print(f"{label}: median {statistics.median(starts):.3f} s, max {max(starts):.3f} s")
    return figures


async def main(quick: bool) -> dict[str, object]:
    flood = 500 if quick else 2_000
    results: dict[str, object] = {"quick": quick, "flood": flood}
    results.update(await platinum_waits(flood))
    results.update(await fair_share(window_s=3.0 if quick else 10.0))
    results.update(await preemption(2 if quick else PREEMPT_TRIALS))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller flood, shorter windows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    figures = asyncio.run(main(args.quick))
    print(json.dumps(figures))
