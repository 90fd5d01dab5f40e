"""Where submit->start time goes, from the event log: a coordinator and 2 workers as processes
(``bench/e2e.py``'s ``run_cluster``), one no-op workload submitted every 50 ms (20/s) through
``POST /v1/workloads``; for each, the time of its ``workload.submitted``, ``replica.scheduled``
and ``replica.running`` events and of its ``started_at`` (what ``bench/e2e.py`` calls the start)
after the wall time just before its request was sent.

Baselines, measured in the same run: the p50 of ``GET /health`` on the same coordinator (the
HTTP floor: client, loopback, server) and, on PostgreSQL, of a one-row ``INSERT`` committed
alone on the same server (one durable commit). The start p50 is also printed as multiples of
them, so that runs on a machine whose speed moves (by up to 1.6x within an hour here) compare.

Run: .venv/bin/python bench/submit_latency.py [--stack pg_nats|sqlite_ws] [--count N]
(last line: one JSON object)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import LATENCY_RATE, run_cluster, stacks, submit_steadily

STEPS = ("workload.submitted", "replica.scheduled", "replica.running", "started_at")
BASELINE_SAMPLES = 300


def _quantiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50": round(statistics.median(values), 2),
        "p90": round(values[int(len(values) * 0.9)], 2),
        "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
    }


async def _log(
    store_url: str, ids: list[str]
) -> tuple[list[tuple[str, str, float]], dict[str, float | None]]:
    """(workload, event kind, at) in log order, and workload -> its replica's started_at."""
    if store_url.startswith("sqlite:///"):
        marks = ",".join("?" * len(ids))
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            events = db.execute(
                f"SELECT workload_id, kind, at FROM events WHERE workload_id IN ({marks})"
                " ORDER BY id",
                ids,
            ).fetchall()
            starts = db.execute(
                f"SELECT workload_id, started_at FROM replicas WHERE workload_id IN ({marks})",
                ids,
            ).fetchall()
        return events, dict(starts)
    conn = await asyncpg.connect(store_url)
    try:
        events = await conn.fetch(
            "SELECT workload_id, kind, at FROM events WHERE workload_id = ANY($1) ORDER BY id",
            ids,
        )
        starts = await conn.fetch(
            "SELECT workload_id, started_at FROM replicas WHERE workload_id = ANY($1)", ids
        )
    finally:
        await conn.close()
    return [tuple(e) for e in events], {s[0]: s[1] for s in starts}


async def _health_p50_ms(url: str) -> float:
    times = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(BASELINE_SAMPLES):
            at = time.perf_counter()
            (await http.get("/health")).raise_for_status()
            times.append((time.perf_counter() - at) * 1000)
    return statistics.median(times)


async def _pg_commit_p50_ms(store_url: str) -> float:
    conn = await asyncpg.connect(store_url)
    try:
        await conn.execute("CREATE TABLE bench_commit (x int)")
        times = []
        for _ in range(BASELINE_SAMPLES):
            at = time.perf_counter()
            await conn.execute("INSERT INTO bench_commit VALUES (1)")
            times.append((time.perf_counter() - at) * 1000)
        await conn.execute("DROP TABLE bench_commit")
    finally:
        await conn.close()
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=("pg_nats", "sqlite_ws"), default="pg_nats")
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    figures: dict[str, object] = {"stack": args.stack, "count": args.count}
    with tempfile.TemporaryDirectory(prefix="niyanta-bench-latency-") as tmp:
        workdir = Path(tmp)
        async with stacks(workdir) as (pg_nats, sqlite_ws):
            stack = pg_nats if args.stack == "pg_nats" else sqlite_ws
            async with run_cluster(stack, workdir / stack.name) as cluster:
                sent = await submit_steadily(cluster, args.count)
                await asyncio.sleep(1.0)  # time for the last ones to start
                events, starts = await _log(stack.store_url, list(sent))
                health = await _health_p50_ms(cluster.url)
            commit = await _pg_commit_p50_ms(stack.store_url) if stack is pg_nats else None
    after: dict[str, list[float]] = {step: [] for step in STEPS}
    for workload_id, kind, at in events:
        if kind in after:
            after[kind].append((at - sent[workload_id]) * 1000)
    missing = [w for w in sent if starts.get(w) is None]
    if missing:
        raise RuntimeError(f"{len(missing)} workloads never started, e.g. {missing[0]}")
    after["started_at"] = [(starts[w] - at) * 1000 for w, at in sent.items()]
    print(f"{args.stack}: {args.count} submits at {LATENCY_RATE:.0f}/s, ms after the send")
    for step in STEPS:
        q = _quantiles(after[step])
        figures[step] = q
        print(f"  {step:20s} p50 {q['p50']:6.2f}  p90 {q['p90']:6.2f}  p99 {q['p99']:6.2f}")
    start_p50 = statistics.median(after["started_at"])
    figures["http_health_p50_ms"] = round(health, 3)
    print(f"  baseline GET /health p50 {health:.2f} ms: start p50 = {start_p50 / health:.1f}x")
    figures["start_p50_over_health"] = round(start_p50 / health, 2)
    if commit is not None:
        figures["pg_commit_p50_ms"] = round(commit, 3)
        figures["start_p50_over_pg_commit"] = round(start_p50 / commit, 2)
        ratio = start_p50 / commit
        print(f"  baseline one-row commit p50 {commit:.2f} ms: start p50 = {ratio:.1f}x")
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
