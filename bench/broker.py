"""Broker throughput and latency for each transport, next to raw nats-py.

Measured in one run, with one coordinator endpoint and 1 and 10 worker links in this process:
- one way: workers send ``Progress`` messages (as running replicas do); messages/s counted when
  the coordinator's handler has seen the last one;
- round trips: each worker sends ``Heartbeat`` requests one after another and waits for the
  coordinator's ``LeaseGrant``; round trips/s over all workers;
- raw nats-py publish -> subscribe of the same encoded bytes, and raw request/reply to an echo
  subscriber at the paced rate (the floors NATS itself sets);
- round-trip p50/p99 at a paced 1,000 requests/s for 3 s (one worker);
- killed-worker detection on WebSocket: a worker link in a subprocess is SIGKILLed; the time
  until the coordinator's on_disconnect runs (median of 5).

The WebSocket endpoint is served by uvicorn (uvloop, as ``niyanta coordinator`` runs it) in this
process, so its figures include both ends' work on the same cores. NATS: 127.0.0.1:4222.

Keys: ``<transport>_msgs_per_s`` (best of 1 and 10 workers, each also given), ``..._rtt_per_s_*``,
``<transport>_rtt_p50_ms``/``_p99_ms``, ``raw_nats_*`` (the baselines), ``ws_kill_detect_ms``, and
``rtt_p99_ms``: the worse of the WebSocket and NATS p99 (NATS p99 follows the raw nats-py one
measured in the same run: it is set by how the machine schedules nats-server and this process).

Run: .venv/bin/python bench/broker.py  (last line: one JSON object with the figures)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import nats
import uvicorn
import uvloop
from nats.aio.msg import Msg
from starlette.applications import Starlette

from niyanta.broker.base import CoordinatorEndpoint, WorkerLink
from niyanta.broker.memory import MemoryHub
from niyanta.broker.messages import AnyMessage, Heartbeat, LeaseGrant, Progress, encode
from niyanta.broker.nats import NatsEndpoint, NatsLink
from niyanta.broker.websocket import WebSocketEndpoint, WebSocketLink, uvicorn_ws_options

NATS_URL = os.environ.get("NIYANTA_BENCH_NATS_URL", "nats://127.0.0.1:4222")
ONE_WAY_MESSAGES = 40_000
ROUND_TRIPS = 5_000
PACED_RATE = 1_000
PACED_SECONDS = 3.0
KILLS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(predicate: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


def progress() -> Progress:
    return Progress(workload_id=uuid.uuid4().hex, index=0, fence=1, progress=0.5)


@dataclass
class Counter:
    target: int = 0
    seen: int = 0
    done: asyncio.Event | None = None

    def expect(self, target: int) -> asyncio.Event:
        self.target, self.seen, self.done = target, 0, asyncio.Event()
        return self.done


class Cluster:
    """A started endpoint whose handler counts Progress and answers Heartbeat with LeaseGrant."""

    def __init__(self, endpoint: CoordinatorEndpoint, link: Callable[[str], WorkerLink]) -> None:
        self.endpoint = endpoint
        self.new_link = link
        self.counter = Counter()
        self.url = ""
        """Where workers dial, for the WebSocket transport."""
        self.disconnected: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        endpoint.on_message(self.handle)
        endpoint.on_disconnect(self.on_disconnect)

    async def handle(self, worker_id: str, message: AnyMessage) -> AnyMessage | None:
        if isinstance(message, Heartbeat):
            return LeaseGrant(ttl_s=5.0)
        counter = self.counter
        counter.seen += 1
        if counter.seen == counter.target and counter.done is not None:
            counter.done.set()
        return None

    async def on_disconnect(self, worker_id: str) -> None:
        self.disconnected.put_nowait((worker_id, time.perf_counter()))

    async def links(self, stack: AsyncExitStack, count: int) -> list[WorkerLink]:
        links = []
        for _ in range(count):
            link = self.new_link(f"b{uuid.uuid4().hex[:8]}")
            stack.push_async_callback(link.close)
            await asyncio.wait_for(link.connect(), 10)
            links.append(link)
        return links


@asynccontextmanager
async def memory_cluster() -> AsyncIterator[Cluster]:
    hub = MemoryHub()
    await hub.endpoint.start()
    yield Cluster(hub.endpoint, hub.worker_link)
    await hub.endpoint.stop()


@asynccontextmanager
async def websocket_cluster() -> AsyncIterator[Cluster]:
    endpoint = WebSocketEndpoint()
    await endpoint.start()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[endpoint.route()]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            **uvicorn_ws_options(),
        )
    )
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started)
    url = f"ws://127.0.0.1:{port}"
    cluster = Cluster(endpoint, lambda worker_id: WebSocketLink([url], worker_id))
    cluster.url = url
    yield cluster
    server.should_exit = True
    await task


@asynccontextmanager
async def nats_cluster() -> AsyncIterator[Cluster]:
    name = f"bench{uuid.uuid4().hex[:8]}"
    endpoint = NatsEndpoint(NATS_URL, name, "bench-coordinator")
    await endpoint.start()
    yield Cluster(endpoint, lambda worker_id: NatsLink(NATS_URL, worker_id, name))
    await endpoint.stop()


async def one_way(cluster: Cluster, workers: int) -> float:
    async with AsyncExitStack() as stack:
        links = await cluster.links(stack, workers)
        per_link = ONE_WAY_MESSAGES // workers
        messages = [[progress() for _ in range(per_link)] for _ in links]
        done = cluster.counter.expect(per_link * workers)

        async def pump(link: WorkerLink, batch: list[Progress]) -> None:
            for message in batch:
                await link.send(message)

        started = time.perf_counter()
        pumps = [pump(link, batch) for link, batch in zip(links, messages, strict=True)]
        await asyncio.gather(*pumps)
        await asyncio.wait_for(done.wait(), 60)
        return per_link * workers / (time.perf_counter() - started)


async def round_trips(cluster: Cluster, workers: int) -> float:
    async with AsyncExitStack() as stack:
        links = await cluster.links(stack, workers)
        per_link = ROUND_TRIPS // workers

        async def ask(link: WorkerLink) -> None:
            for _ in range(per_link):
                await link.request(Heartbeat(worker_id="b"), timeout=5)

        started = time.perf_counter()
        await asyncio.gather(*(ask(link) for link in links))
        return per_link * workers / (time.perf_counter() - started)


async def paced_rtt(cluster: Cluster) -> tuple[float, float]:
    """(p50, p99) in ms of requests sent at PACED_RATE per second."""
    async with AsyncExitStack() as stack:
        (link,) = await cluster.links(stack, 1)
        latencies: list[float] = []

        async def one() -> None:
            started = time.perf_counter()
            await link.request(Heartbeat(worker_id="b"), timeout=5)
            latencies.append((time.perf_counter() - started) * 1000)

        await paced(one)
        quantiles = statistics.quantiles(latencies, n=100)
        return quantiles[49], quantiles[98]


async def raw_nats_msgs_per_s() -> float:
    publisher = await nats.connect(NATS_URL)
    subscriber = await nats.connect(NATS_URL)
    subject = f"bench.raw.{uuid.uuid4().hex}"
    payloads = [encode(progress()) for _ in range(ONE_WAY_MESSAGES)]
    done = asyncio.Event()
    seen = 0

    async def count(_msg: object) -> None:
        nonlocal seen
        seen += 1
        if seen == len(payloads):
            done.set()

    await subscriber.subscribe(subject, cb=count)
    await subscriber.flush()
    started = time.perf_counter()
    for payload in payloads:
        await publisher.publish(subject, payload)
    await asyncio.wait_for(done.wait(), 60)
    elapsed = time.perf_counter() - started
    await publisher.close()
    await subscriber.close()
    return len(payloads) / elapsed


async def raw_nats_paced_rtt() -> tuple[float, float]:
    """(p50, p99) in ms of raw nats-py requests to an echo subscriber at PACED_RATE per second:
    the floor NATS itself sets for the transport's round trips, on this machine, right now."""
    requester = await nats.connect(NATS_URL)
    responder = await nats.connect(NATS_URL)
    subject = f"bench.echo.{uuid.uuid4().hex}"
    payload = encode(Heartbeat(worker_id="b"))

    async def echo(msg: Msg) -> None:
        await responder.publish(msg.reply, msg.data)

    await responder.subscribe(subject, cb=echo)
    await responder.flush()
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        await requester.request(subject, payload, timeout=5)
        latencies.append((time.perf_counter() - started) * 1000)

    await paced(one)
    await requester.close()
    await responder.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return quantiles[49], quantiles[98]


async def paced(one: Callable[[], Awaitable[None]]) -> None:
    """Start ``one()`` PACED_RATE times a second for PACED_SECONDS; wait for all."""
    tasks = []
    origin = time.perf_counter()
    for i in range(int(PACED_RATE * PACED_SECONDS)):
        delay = origin + i / PACED_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)


KILLED_WORKER = """
import asyncio, sys
from niyanta.broker.websocket import WebSocketLink
async def main():
    link = WebSocketLink([sys.argv[1]], sys.argv[2])
    await link.connect()
    print("connected", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def kill_detection_ms(cluster: Cluster) -> float:
    url = cluster.url
    samples = []
    for i in range(KILLS):
        worker_id = f"doomed{i}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            KILLED_WORKER,
            url,
            worker_id,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"connected"
        await until(lambda w=worker_id: w in cluster.endpoint.connected_workers())
        killed_at = time.perf_counter()
        os.kill(proc.pid, signal.SIGKILL)
        gone, seen_at = "", 0.0
        while gone != worker_id:  # skip the links closed by the earlier measurements
            gone, seen_at = await asyncio.wait_for(cluster.disconnected.get(), 10)
        samples.append((seen_at - killed_at) * 1000)
        await proc.wait()
    return statistics.median(samples)


async def main() -> None:
    figures: dict[str, float] = {}
    clusters = {"memory": memory_cluster, "ws": websocket_cluster, "nats": nats_cluster}
    for name, make in clusters.items():
        async with make() as cluster:
            for workers in (1, 10):
                rate = await one_way(cluster, workers)
                figures[f"{name}_msgs_per_s_{workers}w"] = round(rate)
                print(f"{name:6} one way, {workers:2} worker(s): {rate:10,.0f} msg/s")
                rate = await round_trips(cluster, workers)
                figures[f"{name}_rtt_per_s_{workers}w"] = round(rate)
                print(f"{name:6} round trips, {workers:2} worker(s): {rate:10,.0f} /s")
            p50, p99 = await paced_rtt(cluster)
            figures[f"{name}_rtt_p50_ms"] = round(p50, 3)
            figures[f"{name}_rtt_p99_ms"] = round(p99, 3)
            print(f"{name:6} round trip at {PACED_RATE}/s: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
            if name == "ws":
                detect = await kill_detection_ms(cluster)
                figures["ws_kill_detect_ms"] = round(detect, 1)
                print(f"ws     killed worker noticed after {detect:.1f} ms (median of {KILLS})")
        figures[f"{name}_msgs_per_s"] = max(
            figures[f"{name}_msgs_per_s_1w"], figures[f"{name}_msgs_per_s_10w"]
        )
    raw = await raw_nats_msgs_per_s()
    figures["raw_nats_msgs_per_s"] = round(raw)
    print(f"raw nats-py publish -> subscribe: {raw:10,.0f} msg/s")
    p50, p99 = await raw_nats_paced_rtt()
    figures["raw_nats_rtt_p50_ms"] = round(p50, 3)
    figures["raw_nats_rtt_p99_ms"] = round(p99, 3)
    print(f"raw nats-py request/reply at {PACED_RATE}/s: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    figures["rtt_p99_ms"] = max(figures["ws_rtt_p99_ms"], figures["nats_rtt_p99_ms"])
    print(json.dumps(figures))


if __name__ == "__main__":
    uvloop.run(main())
