"""The NATS transport survives a NATS restart: both sides reconnect and resubscribe, the worker
says hello again, a request made while the server was down is answered once it is back, and
request/reply resumes in both directions. The test runs its own nats-server on a spare port."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from tests.integration.coordinator_fixtures import eventually as coordinator_eventually
from tests.integration.coordinator_fixtures import running_coordinator

from niyanta.broker.messages import AnyMessage, Drain, Hello, Progress, Welcome
from niyanta.broker.nats import NatsEndpoint, NatsLink

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    if not os.access(NATS_SERVER, os.X_OK):
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{NATS_SERVER} not found; under CI=true this test must not skip")
        pytest.skip(f"{NATS_SERVER} not found")
    server = NatsServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_request_reply_resumes_after_a_nats_restart(nats_server: NatsServer) -> None:
    url = f"nats://127.0.0.1:{nats_server.port}"
    # The outage outlasts the silence window: silence while the coordinator itself is cut off
    # from NATS is nobody's fault and must not be reported as the worker leaving.
    endpoint = NatsEndpoint(url, "restart", "c1", liveness_window=0.8, retry_interval=0.2)
    received: list[AnyMessage] = []
    disconnects: list[str] = []

    async def disconnected(worker_id: str) -> None:
        disconnects.append(worker_id)

    endpoint.on_disconnect(disconnected)

    async def coordinate(worker_id: str, message: AnyMessage) -> AnyMessage | None:
        received.append(message)
        if isinstance(message, Hello):
            return Welcome(coordinator_id="c1", heartbeat_interval_s=1, lease_ttl_s=5)
        return None

    endpoint.on_message(coordinate)
    link = NatsLink(url, "w1", "restart", presence_interval=0.1, retry_interval=0.2)
    hellos: list[AnyMessage] = []

    async def say_hello() -> None:
        hellos.append(await link.request(Hello(worker_id="w1", session="s"), timeout=10))

    async def obey(message: AnyMessage) -> AnyMessage | None:
        return Progress(workload_id="wl", index=0, fence=1, progress=1.0)

    link.on_connect(say_hello)
    link.on_message(obey)
    await endpoint.start()
    try:
        await link.connect()
        assert isinstance(hellos[0], Welcome)

        await nats_server.stop()
        await eventually(lambda: not link.connected)
        during_outage = asyncio.create_task(
            link.request(Hello(worker_id="w1", session="s"), timeout=15)
        )
        await asyncio.sleep(1.5)
        await nats_server.start()

        assert isinstance(await during_outage, Welcome)
        await eventually(lambda: len(hellos) == 2)
        assert isinstance(hellos[1], Welcome)
        reply = await endpoint.request("w1", Drain(worker_id="w1"), timeout=10)
        assert isinstance(reply, Progress)

        for i in range(100):
            await link.send(Progress(workload_id="wl", index=0, fence=1, progress=i))
        await eventually(lambda: sum(isinstance(m, Progress) for m in received) == 100)
        assert [m.progress for m in received if isinstance(m, Progress)] == list(range(100))
        assert sum(isinstance(m, Hello) for m in received) == 3  # repeats were de-duplicated
        assert disconnects == []
        assert endpoint.connected_workers() == {"w1"}
    finally:
        await link.close()
        await endpoint.stop()


async def test_the_leader_is_not_ready_while_cut_off_from_nats(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """``/ready`` on a NATS leader says whether it can reach its workers; it recovers by itself."""
    url = f"nats://127.0.0.1:{nats_server.port}"
    store = f"sqlite:///{tmp_path / 'c.db'}"
    async with running_coordinator(store, broker=url, cluster="ready-probe") as coordinator:
        await eventually(lambda: coordinator.runtime.leader.is_leader)
        assert (await coordinator.client.get("/ready")).status_code == 200
        await nats_server.stop()

        async def not_ready() -> bool:
            response = await coordinator.client.get("/ready")
            return response.status_code == 503 and "NATS" in response.json()["error"]["message"]

        await coordinator_eventually(not_ready, what="/ready turns 503 without NATS")
        await nats_server.start()

        async def ready() -> bool:
            return (await coordinator.client.get("/ready")).status_code == 200

        await coordinator_eventually(ready, within=20, what="/ready back with NATS")
