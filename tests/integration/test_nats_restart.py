"""The NATS transport survives a NATS restart: both sides reconnect and resubscribe, the worker
says hello again, a request made while the server was down is answered once it is back, and
request/reply resumes in both directions. The test runs its own nats-server on a spare port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from tests.faults.servers import NatsServer, own_nats

from niyanta.broker.messages import AnyMessage, Drain, Hello, Progress, Welcome
from niyanta.broker.nats import NatsEndpoint, NatsLink


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    with own_nats() as server:
        yield server


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

        nats_server.stop()
        await eventually(lambda: not link.connected)
        during_outage = asyncio.create_task(
            link.request(Hello(worker_id="w1", session="s"), timeout=15)
        )
        await asyncio.sleep(1.5)
        nats_server.start()

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
