"""End-to-end throughput and latency of the running system: a coordinator and 2 workers as real
processes (``python -m niyanta coordinator|worker``), no-op workloads (``demo-noop`` from
``examples.demo_jobs``), every transition durable and in the event log.

Stacks: (a) PostgreSQL (a fresh database on 127.0.0.1:5432, dropped after) + NATS
(127.0.0.1:4222, a unique cluster name) and (b) a SQLite file + the built-in WebSocket broker.

- ``<stack>_workloads_per_s``: N no-op workloads submitted through the HTTP API
  (``POST /v1/workloads:batch``, 100 per request, 32 requests at once; ``--single``: one per
  request) on a customer of the uncapped tier (platinum), workers with 256 slots; the rate is N
  over the time from the first submit to the last replica's ``finished_at`` in the store, once
  the store holds all N as succeeded (none may fail).
- ``latency_p50_ms``/``latency_p99_ms`` (PostgreSQL + NATS; ``sqlite_ws_latency_*`` too): one
  workload submitted every 50 ms (20 workloads/s); latency = the replica's ``started_at`` (the
  store time of its ``running`` transition, written when the worker reports it started) minus
  the wall time just before this process sent the submit request.
- Baseline ``store_single_commit_workloads_per_s_<backend>``: the same four durable transitions
  per workload (submit, assign, running, succeeded) straight on the store in this process with
  16 concurrent callers, one transaction each: the rate without a coordinator, a broker or
  batching.

``run_cluster()`` takes extra coordinator/worker CLI arguments and environment, so other
benchmarks (observability overhead on/off) reuse it.

The processes log at their default level (INFO: a few lines per workload); ``--log-level
WARNING`` measures without those lines.

Run: .venv/bin/python bench/e2e.py [--quick] [--single] [--log-level LEVEL]
(last line: one JSON object with the figures)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.processes import process_group, wait_until_ready  # noqa: E402

from niyanta.errors import Conflict  # noqa: E402
from niyanta.model import Customer, WorkloadSpec, WorkloadType  # noqa: E402
from niyanta.store.base import Assignment, CompleteReplica, MarkRunning, Store  # noqa: E402
from niyanta.store.factory import open_store  # noqa: E402
from store import pg_database  # noqa: E402  (bench/store.py, beside this file)

NATS_URL = os.environ.get("NIYANTA_BENCH_NATS_URL", "nats://127.0.0.1:4222")
NOOP_MODULE = "examples.demo_jobs"
NOOP_TYPE = "demo-noop"
CUSTOMER = "bench"
WORKER_SLOTS = 256
SUBMITTERS = 32
"""Concurrent HTTP submitters in this process."""
BATCH_SIZE = 100
"""Workloads per ``POST /v1/workloads:batch`` request."""
LATENCY_RATE = 20.0
POLL_S = 0.1


@dataclass(frozen=True)
class Stack:
    name: str
    store_url: str
    broker_args: tuple[str, ...]


@dataclass
class Cluster:
    url: str
    store_url: str
    store: Store
    workdir: Path


@dataclass(frozen=True)
class ClusterOptions:
    """What a caller may vary: extra CLI arguments and environment for each process."""

    coordinator_args: tuple[str, ...] = ()
    worker_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 2


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def stacks(workdir: Path) -> AsyncIterator[tuple[Stack, Stack]]:
    """(PostgreSQL + NATS, SQLite + WebSocket)."""
    async with pg_database() as pg_url:
        cluster = f"bench-e2e-{uuid.uuid4().hex[:8]}"
        yield (
            Stack("pg_nats", pg_url, ("--broker", NATS_URL, "--cluster", cluster)),
            Stack("sqlite_ws", f"sqlite:///{workdir / 'bench.db'}", ()),
        )


@contextmanager
def _processes(
    stack: Stack, workdir: Path, options: ClusterOptions
) -> Iterator[tuple[str, list[str]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(options.env)
    with process_group(workdir) as group:
        group.start(
            "coordinator",
            [
                "coordinator",
                "--store",
                stack.store_url,
                *stack.broker_args,
                "--listen",
                f"127.0.0.1:{port}",
                *options.coordinator_args,
            ],
            env=env,
        )
        wait_until_ready(url, timeout=30)
        names = [f"bench-w{i}" for i in range(options.workers)]
        for name in names:
            group.start(
                name,
                [
                    "--coordinator",
                    url,
                    "worker",
                    *stack.broker_args,
                    "--import",
                    NOOP_MODULE,
                    "--id",
                    name,
                    "--slots",
                    str(WORKER_SLOTS),
                    *options.worker_args,
                ],
                env=env,
            )
        yield url, names


@asynccontextmanager
async def run_cluster(
    stack: Stack, workdir: Path, options: ClusterOptions | None = None
) -> AsyncIterator[Cluster]:
    """A coordinator and ``options.workers`` workers on ``stack``, the customer ``bench``
    created and every worker joined; a store handle in this process for counting."""
    options = options or ClusterOptions()
    os.makedirs(workdir, exist_ok=True)
    with _processes(stack, workdir, options) as (url, names):
        store = await open_store(stack.store_url)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                await _ensure_customer(http)

                async def joined() -> bool:
                    workers = (await http.get("/v1/workers")).json()
                    return {w["id"] for w in _items(workers)} >= set(names)

                deadline = time.monotonic() + 30
                while not await joined():
                    if time.monotonic() > deadline:
                        raise TimeoutError("workers did not join")
                    await asyncio.sleep(0.1)
            yield Cluster(url, stack.store_url, store, workdir)
        finally:
            await store.close()


def _items(body: object) -> list[dict[str, object]]:
    if isinstance(body, dict):
        return list(body.get("items", []))
    assert isinstance(body, list)
    return body


async def _ensure_customer(http: httpx.AsyncClient) -> None:
    # platinum: the default tier without a concurrency cap (gold caps a customer at 200).
    response = await http.post("/v1/customers", json={"id": CUSTOMER, "tier": "platinum"})
    if response.status_code not in (200, 201, 409):
        raise RuntimeError(f"create customer: {response.status_code} {response.text}")


def _body() -> dict[str, object]:
    return {"customer_id": CUSTOMER, "type": NOOP_TYPE, "params": {}}


async def submit_batch(http: httpx.AsyncClient, count: int) -> list[str]:
    """``count`` no-op workloads in one request (``POST /v1/workloads:batch``)."""
    response = await http.post("/v1/workloads:batch", json={"items": [_body()] * count})
    response.raise_for_status()
    return [item["id"] for item in response.json()["items"]]


async def submit_one(http: httpx.AsyncClient) -> str:
    response = await http.post("/v1/workloads", json=_body())
    response.raise_for_status()
    return str(response.json()["id"])


async def _succeeded(store: Store) -> tuple[int, int]:
    counts = await store.count_replicas_by_state()
    done = counts.get((CUSTOMER, "succeeded"), 0)
    failed = counts.get((CUSTOMER, "failed"), 0) + counts.get((CUSTOMER, "cancelled"), 0)
    return done, failed


async def last_finished_at(store_url: str) -> float:
    """The latest ``finished_at`` of the bench customer's replicas (the store has no call for
    it, so this reads the table)."""
    sql = "SELECT max(finished_at) FROM replicas WHERE customer_id = 'bench'"
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            return float(db.execute(sql).fetchone()[0])
    conn = await asyncpg.connect(store_url)
    try:
        return float(await conn.fetchval(sql))
    finally:
        await conn.close()


async def measure_throughput(cluster: Cluster, count: int, batch: bool) -> float:
    """Workloads/s from the first submit until the store holds all ``count`` as succeeded."""
    before, _ = await _succeeded(cluster.store)
    limits = httpx.Limits(max_connections=SUBMITTERS, max_keepalive_connections=SUBMITTERS)
    async with httpx.AsyncClient(base_url=cluster.url, timeout=60, limits=limits) as http:
        size = BATCH_SIZE if batch else 1
        chunks = [min(size, count - i) for i in range(0, count, size)]
        started = time.perf_counter()
        started_wall = time.time()

        async def submitter() -> None:
            while chunks:
                n = chunks.pop()
                if batch:
                    await submit_batch(http, n)
                else:
                    await submit_one(http)

        submitting = asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
        submitted_at: list[float] = []
        submitting.add_done_callback(lambda _: submitted_at.append(time.perf_counter()))
        while True:
            if submitting.done():
                submitting.result()
            done, failed = await _succeeded(cluster.store)
            if failed:
                raise RuntimeError(f"{failed} bench workloads failed or were cancelled")
            if done - before >= count:
                break
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"only {done - before} of {count} succeeded in 300 s")
            await asyncio.sleep(POLL_S)
        await submitting
    # The exact end: the last success's store time (polling only tells that it happened).
    elapsed = await last_finished_at(cluster.store_url) - started_wall
    submitted_in = submitted_at[0] - started
    rate = count / elapsed
    print(
        f"  {count} workloads ({'batches of ' + str(BATCH_SIZE) if batch else 'one per request'})"
        f": submitted in {submitted_in:.2f} s, all succeeded in {elapsed:.2f} s = {rate:.0f}/s"
    )
    return rate


async def submit_steadily(cluster: Cluster, total: int) -> dict[str, float]:
    """``total`` single submits at ``LATENCY_RATE``/s: workload id -> the wall time just before
    its request was sent."""
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as http:
        await submit_one(http)  # warm the connection and the type cache

        async def one() -> None:
            at = time.time()
            sent[await submit_one(http)] = at

        tasks = []
        start = time.monotonic()
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i / LATENCY_RATE - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return sent


async def measure_latency(cluster: Cluster, seconds: float) -> tuple[float, float]:
    """Submit->start p50/p99 (ms) at a steady ``LATENCY_RATE`` workloads/s."""
    total = int(seconds * LATENCY_RATE)
    sent = await submit_steadily(cluster, total)
    latencies: list[float] = []
    deadline = time.monotonic() + 60
    for workload_id, at in sent.items():
        while True:
            (replica,) = await cluster.store.list_replicas(workload_id)
            if replica.started_at is not None:
                latencies.append((replica.started_at - at) * 1000)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workload_id} never started")
            await asyncio.sleep(0.05)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"  submit->start at {LATENCY_RATE:.0f}/s, {total} workloads: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms"
    )
    return p50, p99


async def store_single_commit_rate(store_url: str, count: int) -> float:
    """Baseline: submit, assign, running, succeeded, one transaction each, no coordinator."""
    store = await open_store(store_url)
    try:
        await store.create_customer(Customer(id="baseline", tier="gold"))
        with contextlib.suppress(Conflict):
            await store.register_type(WorkloadType(name=NOOP_TYPE, version="1"))
        remaining = list(range(count))
        WORKER = "baseline-w"

        async def caller() -> None:
            while remaining:
                remaining.pop()
                submitted = await store.submit_workload(
                    WorkloadSpec("baseline", NOOP_TYPE, {}), "bench"
                )
                key = (await store.list_replicas(submitted.workload.id))[0].key
                (assigned,) = await store.assign_replicas([Assignment(key, WORKER, 30.0, 0)])
                (running,) = await store.apply_writes([MarkRunning(key, assigned.fence, WORKER)])
                assert not isinstance(running, Exception), running
                (done,) = await store.apply_writes([CompleteReplica(key, assigned.fence)])
                assert not isinstance(done, Exception), done

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(16)))
        rate = count / (time.perf_counter() - started)
    finally:
        await store.close()
    print(f"  baseline (store only, one commit per transition): {count} workloads = {rate:.0f}/s")
    return rate


async def bench_stack(
    stack: Stack,
    workdir: Path,
    count: int,
    latency_s: float,
    batch: bool,
    options: ClusterOptions | None = None,
) -> dict[str, float]:
    print(f"{stack.name}: coordinator + 2 workers")
    figures: dict[str, float] = {}
    async with run_cluster(stack, workdir / stack.name, options) as cluster:
        p50, p99 = await measure_latency(cluster, latency_s)
        figures[f"{stack.name}_workloads_per_s"] = round(
            await measure_throughput(cluster, count, batch)
        )
        figures[f"{stack.name}_latency_p50_ms"] = round(p50, 2)
        figures[f"{stack.name}_latency_p99_ms"] = round(p99, 2)
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer workloads, shorter runs")
    parser.add_argument(
        "--single", action="store_true", help="submit one workload per request (no batches)"
    )
    parser.add_argument(
        "--log-level", help="NIYANTA_LOG_LEVEL of the processes (default: theirs, INFO)"
    )
    args = parser.parse_args()
    options = ClusterOptions(env={"NIYANTA_LOG_LEVEL": args.log_level} if args.log_level else {})
    count = 2000 if args.quick else 10_000
    latency_s = 5.0 if args.quick else 15.0
    baseline_count = 500 if args.quick else 2000
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="niyanta-bench-e2e-") as tmp:
        workdir = Path(tmp)
        async with stacks(workdir) as (pg_nats, sqlite_ws):
            for stack in (pg_nats, sqlite_ws):
                figures.update(
                    await bench_stack(
                        stack, workdir, count, latency_s, batch=not args.single, options=options
                    )
                )
            pg_baseline = await store_single_commit_rate(pg_nats.store_url, baseline_count)
        sqlite_url = f"sqlite:///{workdir / 'baseline.db'}"
        sqlite_baseline = await store_single_commit_rate(sqlite_url, baseline_count)
    figures["latency_p50_ms"] = figures["pg_nats_latency_p50_ms"]
    figures["latency_p99_ms"] = figures["pg_nats_latency_p99_ms"]
    figures["store_single_commit_workloads_per_s_pg"] = round(pg_baseline)
    figures["store_single_commit_workloads_per_s_sqlite"] = round(sqlite_baseline)
    figures["workloads"] = count
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
