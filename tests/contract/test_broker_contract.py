"""The broker contract, run over every transport: memory, the built-in WebSocket (a real uvicorn
server on a free port) and NATS (the real server, a unique cluster name per test)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import msgspec
import nats
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette

from niyanta.broker.backoff import Backoff
from niyanta.broker.base import CoordinatorEndpoint, WorkerLink
from niyanta.broker.memory import MemoryEndpoint, MemoryHub, MemoryWorkerLink
from niyanta.broker.messages import (
    AnyMessage,
    Drain,
    Hello,
    Progress,
    Refusal,
    StopReplica,
    Welcome,
    decode,
    encode,
)
from niyanta.broker.nats import NatsEndpoint, NatsLink
from niyanta.broker.websocket import WebSocketEndpoint, WebSocketLink, uvicorn_ws_options
from niyanta.errors import BrokerError, MessageRefused

MAX_BYTES = 64 * 1024
TOKEN = "s3cret"
TRANSPORTS = ["memory", "websocket", "nats"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def welcome() -> Welcome:
    return Welcome(coordinator_id="c1", heartbeat_interval_s=1.0, lease_ttl_s=5.0)


def hello(worker_id: str, token: str | None = None) -> Hello:
    return Hello(worker_id=worker_id, session=uuid.uuid4().hex, token=token)


@dataclass
class Coordinator:
    """A recording coordinator: answers Hello with Welcome and records everything else."""

    endpoint: CoordinatorEndpoint
    received: dict[str, list[AnyMessage]] = field(default_factory=dict)
    disconnects: list[str] = field(default_factory=list)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    slow_worker: str | None = None
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.endpoint.on_message(self.handle)
        self.endpoint.on_disconnect(self.disconnected)

    async def handle(self, worker_id: str, message: AnyMessage) -> AnyMessage | None:
        if worker_id == self.slow_worker:
            await self.release_slow.wait()
        self.received.setdefault(worker_id, []).append(message)
        return welcome() if isinstance(message, Hello) else None

    async def disconnected(self, worker_id: str) -> None:
        self.disconnects.append(worker_id)
        self.gone.set()


@dataclass
class Worker:
    link: WorkerLink
    worker_id: str
    received: list[AnyMessage] = field(default_factory=list)
    connects: int = 0
    welcomes: list[AnyMessage] = field(default_factory=list)
    release: asyncio.Event | None = None

    def __post_init__(self) -> None:
        self.link.on_message(self.handle)
        self.link.on_connect(self.connected)

    async def connected(self) -> None:
        self.connects += 1
        self.welcomes.append(await self.link.request(hello(self.worker_id), timeout=5))

    async def handle(self, message: AnyMessage) -> AnyMessage | None:
        if self.release is not None:
            await self.release.wait()
        self.received.append(message)
        if isinstance(message, Drain):
            return Progress(workload_id="w", index=0, fence=1, progress=1.0)
        return None


class Harness:
    """One transport: a started coordinator endpoint, links to it, and ways to hurt them."""

    endpoint: CoordinatorEndpoint
    coordinator: Coordinator

    def __init__(self, stack: AsyncExitStack) -> None:
        self.stack = stack

    def new_link(self, worker_id: str, token: str | None = None) -> WorkerLink:
        raise NotImplementedError

    async def sever(self, worker: Worker) -> None:
        """Kill the worker's connection as a network failure would."""
        raise NotImplementedError

    async def raw_exchange(self, data: bytes) -> AnyMessage:
        """Send raw bytes to the coordinator as a worker would; the answer."""
        raise NotImplementedError

    async def worker(self, worker_id: str, *, connect: bool = True) -> Worker:
        worker = Worker(self.new_link(worker_id), worker_id)
        self.stack.push_async_callback(worker.link.close)
        if connect:
            await asyncio.wait_for(worker.link.connect(), 10)
        return worker


class MemoryHarness(Harness):
    async def setup(self, token: str | None) -> None:
        self.hub = MemoryHub("c1", max_message_bytes=MAX_BYTES, token=token)
        self.endpoint = self.hub.coordinator_endpoint()
        await self.endpoint.start()

    def new_link(self, worker_id: str, token: str | None = None) -> WorkerLink:
        return self.hub.worker_link(worker_id, token)

    async def sever(self, worker: Worker) -> None:
        await self.hub.drop(worker.worker_id)

    async def raw_exchange(self, data: bytes) -> AnyMessage:
        raw = await self.worker(f"raw-{uuid.uuid4().hex[:6]}")
        assert isinstance(raw.link, MemoryWorkerLink)
        assert isinstance(self.endpoint, MemoryEndpoint)
        connection = self.endpoint.connection(raw.worker_id)
        assert connection is not None
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def capture(reply: bytes) -> None:
            answer.set_result(reply)

        await connection.coordinator_side.receive(data, respond=capture)
        return decode(await asyncio.wait_for(answer, 5))


class WebSocketHarness(Harness):
    async def setup(self, token: str | None, ping_timeout: float = 5.0) -> None:
        self.endpoint = WebSocketEndpoint("c1", token=token, max_message_bytes=MAX_BYTES)
        await self.endpoint.start()
        self.port = free_port()
        config = uvicorn.Config(
            Starlette(routes=[self.endpoint.route()]),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            **uvicorn_ws_options(MAX_BYTES, ping_interval=0.5, ping_timeout=ping_timeout),
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())

        async def shutdown() -> None:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

        self.stack.push_async_callback(shutdown)
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        self.url = f"ws://127.0.0.1:{self.port}"

    def new_link(self, worker_id: str, token: str | None = None) -> WorkerLink:
        return WebSocketLink([self.url], worker_id, token, max_message_bytes=MAX_BYTES)

    async def sever(self, worker: Worker) -> None:
        assert isinstance(worker.link, WebSocketLink)
        ws = worker.link._ws
        assert ws is not None
        ws.transport.abort()

    async def raw_exchange(self, data: bytes) -> AnyMessage:
        url = f"{self.url}/v1/broker?worker=raw-{uuid.uuid4().hex[:6]}"
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send(data)
            reply = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(reply, bytes)
        return decode(reply)


class NatsHarness(Harness):
    def __init__(self, stack: AsyncExitStack, url: str, liveness_window: float = 1.0) -> None:
        super().__init__(stack)
        self.url = url
        self.cluster = f"t{uuid.uuid4().hex[:10]}"
        self.liveness_window = liveness_window

    async def setup(self, token: str | None) -> None:
        self.endpoint = NatsEndpoint(
            self.url,
            self.cluster,
            "c1",
            token,
            max_message_bytes=MAX_BYTES,
            liveness_window=self.liveness_window,
            retry_interval=0.2,
        )
        await self.endpoint.start()
        self.stack.push_async_callback(self.endpoint.stop)

    def new_link(self, worker_id: str, token: str | None = None) -> WorkerLink:
        return NatsLink(
            self.url,
            worker_id,
            self.cluster,
            token,
            max_message_bytes=MAX_BYTES,
            presence_interval=0.2,
            retry_interval=0.2,
        )

    async def sever(self, worker: Worker) -> None:
        assert isinstance(worker.link, NatsLink)
        transport = worker.link.client._transport
        assert transport is not None
        transport._io_writer.transport.abort()

    async def raw_exchange(self, data: bytes) -> AnyMessage:
        client = await nats.connect(self.url)
        try:
            reply = await client.request(f"niyanta.{self.cluster}.coord", data, timeout=5)
        finally:
            await client.close()
        return decode(reply.data)


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture(params=TRANSPORTS)
async def make_harness(request: pytest.FixtureRequest) -> AsyncIterator[HarnessFactory]:
    transport: str = request.param
    nats_url = request.getfixturevalue("nats_url") if transport == "nats" else ""
    async with AsyncExitStack() as stack:

        async def make(token: str | None = None) -> Harness:
            harness: MemoryHarness | WebSocketHarness | NatsHarness
            if transport == "memory":
                harness = MemoryHarness(stack)
            elif transport == "websocket":
                harness = WebSocketHarness(stack)
            else:
                harness = NatsHarness(stack, nats_url)
            await harness.setup(token)
            harness.coordinator = Coordinator(harness.endpoint)
            return harness

        yield make


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_request_reply_in_both_directions(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    worker = await harness.worker("w1")
    answer = worker.welcomes[0]
    assert isinstance(answer, Welcome)
    assert answer.sender == "c1"
    assert "w1" in harness.endpoint.connected_workers()

    drain = Drain(worker_id="w1")
    reply = await harness.endpoint.request("w1", drain, timeout=5)
    assert isinstance(reply, Progress)
    assert reply.corr == drain.id
    assert reply.sender == "w1"


async def test_broadcast_reaches_every_worker(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    workers = [await harness.worker(f"w{i}") for i in range(10)]
    await eventually(lambda: len(harness.endpoint.connected_workers()) == 10)
    stop = StopReplica(workload_id="wl", index=0, fence=1, reason="drain")
    await harness.endpoint.broadcast(stop)
    await eventually(lambda: all(len(w.received) == 1 for w in workers))
    assert {w.received[0].id for w in workers} == {stop.id}


async def test_messages_arrive_in_the_order_sent(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    worker = await harness.worker("w1")
    for i in range(1000):
        await worker.link.send(Progress(workload_id="wl", index=0, fence=1, progress=i))
        await harness.endpoint.send("w1", Progress(workload_id="wl", index=0, fence=1, progress=i))

    def progress_at_coordinator() -> list[float]:
        return [m.progress for m in harness.coordinator.received["w1"] if isinstance(m, Progress)]

    await eventually(lambda: len(progress_at_coordinator()) == 1000, within=10)
    await eventually(lambda: len(worker.received) == 1000, within=10)
    assert progress_at_coordinator() == list(range(1000))
    assert [m.progress for m in worker.received if isinstance(m, Progress)] == list(range(1000))


async def test_disconnect_is_reported_to_the_coordinator(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    worker = await harness.worker("w1")
    await harness.worker("w2")
    await worker.link.close()
    await asyncio.wait_for(harness.coordinator.gone.wait(), 3)
    assert harness.coordinator.disconnects == ["w1"]
    assert harness.endpoint.connected_workers() == {"w2"}
    with pytest.raises(BrokerError):
        await harness.endpoint.send("w1", Drain(worker_id="w1"))


async def test_link_reconnects_and_says_hello_again(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    worker = await harness.worker("w1")
    await harness.sever(worker)
    await eventually(lambda: worker.connects == 2)
    await eventually(lambda: worker.link.connected and len(worker.welcomes) == 2)
    assert isinstance(worker.welcomes[1], Welcome)
    reply = await harness.endpoint.request("w1", Drain(worker_id="w1"), timeout=5)
    assert isinstance(reply, Progress)
    hellos = [m for m in harness.coordinator.received["w1"] if isinstance(m, Hello)]
    assert len(hellos) == 2


async def test_oversized_message_is_refused_and_receiver_survives(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness()
    worker = await harness.worker("w1")
    huge = Progress(workload_id="x" * (MAX_BYTES + 1), index=0, fence=1, progress=0.0)
    with pytest.raises(MessageRefused, match="too_large"):
        await worker.link.send(huge)
    with pytest.raises(MessageRefused, match="too_large"):
        await harness.endpoint.send("w1", huge)
    with pytest.raises(MessageRefused, match="too_large"):
        await harness.endpoint.broadcast(huge)

    answer = await harness.raw_exchange(encode(huge))
    assert isinstance(answer, Refusal)
    assert answer.code == "too_large"
    assert await harness.endpoint.request("w1", Drain(worker_id="w1"), timeout=5)
    assert isinstance(await worker.link.request(hello("w1"), timeout=5), Welcome)


async def test_malformed_and_unknown_version_are_refused(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    worker = await harness.worker("w1")

    garbage = await harness.raw_exchange(b"\xc1not msgpack")
    assert isinstance(garbage, Refusal)
    assert garbage.code == "malformed"

    unknown_kind = await harness.raw_exchange(msgspec.msgpack.encode({"t": "nope", "v": 1}))
    assert isinstance(unknown_kind, Refusal)
    assert unknown_kind.code == "malformed"

    future = hello("w1")
    future.v = 99
    refused = await harness.raw_exchange(encode(future))
    assert isinstance(refused, Refusal)
    assert refused.code == "unknown_version"
    assert refused.corr == future.id

    assert all(m.v == 1 for ms in harness.coordinator.received.values() for m in ms)
    assert isinstance(await worker.link.request(hello("w1"), timeout=5), Welcome)


async def test_slow_handler_does_not_block_other_workers(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    slow = await harness.worker("slow")
    fast = await harness.worker("fast")
    harness.coordinator.slow_worker = "slow"
    await slow.link.send(Progress(workload_id="wl", index=0, fence=1, progress=0.5))
    started = time.monotonic()
    assert isinstance(await fast.link.request(hello("fast"), timeout=5), Welcome)

    slow.release = asyncio.Event()
    await harness.endpoint.send("slow", Drain(worker_id="slow"))
    reply = await harness.endpoint.request("fast", Drain(worker_id="fast"), timeout=5)
    assert isinstance(reply, Progress)
    assert time.monotonic() - started < 2.0
    assert not slow.received

    harness.coordinator.release_slow.set()
    slow.release.set()
    await eventually(lambda: len(slow.received) == 1)
    await eventually(
        lambda: any(isinstance(m, Progress) for m in harness.coordinator.received["slow"])
    )


async def test_sending_to_an_unknown_worker_fails(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    with pytest.raises(BrokerError):
        await harness.endpoint.send("nobody", Drain(worker_id="nobody"))
    with pytest.raises(BrokerError):
        await harness.endpoint.request("nobody", Drain(worker_id="nobody"), timeout=1)


async def test_hello_with_a_wrong_token_is_refused(make_harness: HarnessFactory) -> None:
    harness = await make_harness(token=TOKEN)
    intruder = Worker(harness.new_link("intruder", token="wrong"), "intruder")
    harness.stack.push_async_callback(intruder.link.close)
    await asyncio.wait_for(intruder.link.connect(), 10)
    refusal = intruder.welcomes[0]
    assert isinstance(refusal, Refusal)
    assert refusal.code == "unauthorized"
    assert "intruder" not in harness.coordinator.received
    assert "intruder" not in harness.endpoint.connected_workers()

    member = Worker(harness.new_link("member", token=TOKEN), "member")
    harness.stack.push_async_callback(member.link.close)
    await asyncio.wait_for(member.link.connect(), 10)
    assert isinstance(member.welcomes[0], Welcome)
    assert "member" in harness.endpoint.connected_workers()


async def test_a_restarted_endpoint_reports_no_departures(make_harness: HarnessFactory) -> None:
    harness = await make_harness()
    worker = await harness.worker("w1")
    await harness.endpoint.stop()
    await asyncio.sleep(0.2)
    await harness.endpoint.start()

    deadline = time.monotonic() + 10
    while True:
        try:
            reply = await worker.link.request(hello("w1"), timeout=1)
            break
        except (BrokerError, TimeoutError):
            assert time.monotonic() < deadline, "the worker never reached the restarted endpoint"
            await asyncio.sleep(0.05)
    assert isinstance(reply, Welcome)
    assert "w1" in harness.endpoint.connected_workers()
    assert harness.coordinator.disconnects == []


# --- a killed worker process ------------------------------------------------------------------

WORKER_SCRIPT = """
import asyncio, sys
from niyanta.broker.factory import open_worker_link
from niyanta.broker.messages import Hello

async def main() -> None:
    link = open_worker_link(sys.argv[1], sys.argv[2], cluster=sys.argv[3])
    async def hello() -> None:
        await link.request(Hello(worker_id=sys.argv[2], session="s"), timeout=5)
    link.on_connect(hello)
    await link.connect()
    print("connected", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@asynccontextmanager
async def worker_process(
    spec: str, worker_id: str, cluster: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER_SCRIPT,
        spec,
        worker_id,
        cluster,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"connected"
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_killed_websocket_worker_is_noticed_within_a_second() -> None:
    async with AsyncExitStack() as stack:
        harness = WebSocketHarness(stack)
        await harness.setup(None)
        harness.coordinator = Coordinator(harness.endpoint)
        async with worker_process(harness.url, "doomed", "default") as proc:
            await eventually(lambda: "doomed" in harness.endpoint.connected_workers())
            killed_at = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(harness.coordinator.gone.wait(), 1.0)
            assert time.monotonic() - killed_at < 1.0
        assert harness.coordinator.disconnects == ["doomed"]


async def test_killed_nats_worker_is_reported_after_the_silence_window(nats_url: str) -> None:
    async with AsyncExitStack() as stack:
        # The subprocess announces itself every second (the default).
        harness = NatsHarness(stack, nats_url, liveness_window=2.5)
        await harness.setup(None)
        harness.coordinator = Coordinator(harness.endpoint)
        async with worker_process(nats_url, "doomed", harness.cluster) as proc:
            await eventually(lambda: "doomed" in harness.endpoint.connected_workers())
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(harness.coordinator.gone.wait(), 4.0)
        assert harness.coordinator.disconnects == ["doomed"]
        assert harness.endpoint.connected_workers() == set()


# --- half-open links (a peer that vanished without closing its socket) ----------------------


class FreezableProxy:
    """A TCP relay that can go silent at once in both directions, leaving every socket open (as
    a host that lost power or a partitioned network would); it also stops accepting."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        self.thawed.clear()
        assert self.server is not None
        self.server.close()

    async def close(self) -> None:
        self.thawed.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self.tasks.add(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while True:
            await self.thawed.wait()
            data = await source.read(65536)
            if not self.thawed.is_set():
                await self.thawed.wait()  # swallowed by the dead network: never delivered
                continue
            if not data:
                sink.close()
                return
            sink.write(data)
            await sink.drain()


@asynccontextmanager
async def websocket_behind_proxy() -> AsyncIterator[tuple[WebSocketHarness, FreezableProxy, str]]:
    async with AsyncExitStack() as stack:
        harness = WebSocketHarness(stack)
        await harness.setup(None, ping_timeout=1.0)
        harness.coordinator = Coordinator(harness.endpoint)
        proxy = FreezableProxy(harness.port)
        proxy_port = await proxy.start()
        stack.push_async_callback(proxy.close)
        yield harness, proxy, f"ws://127.0.0.1:{proxy_port}"


async def test_coordinator_pings_drop_a_half_open_worker_link() -> None:
    async with websocket_behind_proxy() as (harness, proxy, proxy_url):
        link = WebSocketLink([proxy_url], "w1", ping_interval=60, ping_timeout=0.5)
        worker = Worker(link, "w1")
        harness.stack.push_async_callback(link.close)
        await asyncio.wait_for(link.connect(), 10)
        proxy.freeze()
        # The server pings every 0.5 s and gives up 1 s after a ping without a pong.
        await asyncio.wait_for(harness.coordinator.gone.wait(), 3.0)
        assert harness.coordinator.disconnects == ["w1"]
        assert worker.connects == 1


async def test_a_link_tries_every_coordinator_url_before_backing_off() -> None:
    # Two coordinators that refuse (gone, or a follower), then the leader: it is found within
    # one round, however long the back-off between rounds has grown.
    async with AsyncExitStack() as stack:
        harness = WebSocketHarness(stack)
        await harness.setup(None)
        harness.coordinator = Coordinator(harness.endpoint)
        urls = [f"ws://127.0.0.1:{free_port()}", f"ws://127.0.0.1:{free_port()}", harness.url]
        link = WebSocketLink(urls, "w1", backoff=Backoff(initial=30.0, maximum=30.0))
        worker = Worker(link, "w1")
        stack.push_async_callback(link.close)
        await asyncio.wait_for(link.connect(), 5)
        assert worker.connects == 1


async def test_worker_pings_detect_a_half_open_link_and_fail_over() -> None:
    async with websocket_behind_proxy() as (harness, proxy, proxy_url):
        urls = [proxy_url, harness.url]
        link = WebSocketLink(urls, "w1", ping_interval=0.2, ping_timeout=0.3)
        worker = Worker(link, "w1")
        harness.stack.push_async_callback(link.close)
        await asyncio.wait_for(link.connect(), 10)
        proxy.freeze()
        # connects counts the dial; the Welcome answering its Hello comes a round trip later.
        await eventually(lambda: worker.connects == 2 and len(worker.welcomes) == 2, within=3)
        assert isinstance(worker.welcomes[1], Welcome)
        reply = await harness.endpoint.request("w1", Drain(worker_id="w1"), timeout=5)
        assert isinstance(reply, Progress)
