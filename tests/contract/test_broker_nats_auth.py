"""NATS user/password authentication through the URL, against a nats-server this test starts with
credentials on a spare port."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator

import pytest

from niyanta.broker.factory import open_coordinator_endpoint, open_worker_link
from niyanta.broker.messages import AnyMessage, Hello, Welcome
from niyanta.errors import BrokerError

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
USER, PASSWORD = "niyanta", "open-sesame"


@pytest.fixture
async def nats_port() -> AsyncIterator[int]:
    if not os.access(NATS_SERVER, os.X_OK):
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{NATS_SERVER} not found; under CI=true this test must not skip")
        pytest.skip(f"{NATS_SERVER} not found")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    args = ["-a", "127.0.0.1", "-p", str(port), "--user", USER, "--pass", PASSWORD]
    proc = await asyncio.create_subprocess_exec(NATS_SERVER, *args)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                await asyncio.sleep(0.02)
        yield port
    finally:
        proc.kill()
        await proc.wait()


async def test_credentials_in_the_url_are_required_and_checked(nats_port: int) -> None:
    good = f"nats://{USER}:{PASSWORD}@127.0.0.1:{nats_port}"
    endpoint = open_coordinator_endpoint(good, cluster="auth")

    async def welcome(worker_id: str, message: AnyMessage) -> AnyMessage | None:
        return Welcome(coordinator_id="c", heartbeat_interval_s=1, lease_ttl_s=5)

    endpoint.on_message(welcome)
    await endpoint.start()
    member = open_worker_link(good, "member", cluster="auth")
    intruder = open_worker_link(f"nats://{USER}:wrong@127.0.0.1:{nats_port}", "x", cluster="auth")
    try:
        await asyncio.wait_for(member.connect(), 10)
        reply = await member.request(Hello(worker_id="member", session="s"), timeout=5)
        assert isinstance(reply, Welcome)

        with pytest.raises(BrokerError, match="refused the credentials") as refused:
            await asyncio.wait_for(intruder.connect(), 10)
        assert "wrong" not in str(refused.value)
        assert not intruder.connected
    finally:
        await intruder.close()
        await member.close()
        await endpoint.stop()
