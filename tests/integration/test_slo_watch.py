"""The leader's SLO watch, end to end in one process: a real coordinator and worker runtime on
SQLite and the in-memory broker, and a webhook receiver listening on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.coordinator_fixtures import (
    Running,
    eventually,
    running_coordinator,
    start_worker,
)

from niyanta import PermanentError, Registry, WorkloadContext, workload
from niyanta.coordinator.slo_watch import SloWatch
from niyanta.model import Event
from niyanta.slo.evaluator import SloWindow
from niyanta.store.base import EventQuery
from niyanta.worker import WorkerSettings

REGISTRY = Registry()


@workload("ok", registry=REGISTRY)
async def ok(ctx: WorkloadContext) -> None:
    return None


@workload("broken", registry=REGISTRY)
async def broken(ctx: WorkloadContext) -> None:
    raise PermanentError("bad row")


class WebhookReceiver:
    """A minimal HTTP server: records each POSTed JSON body; answers 503 to the first
    ``refuse`` requests (to exercise the sender's retries), 200 after."""

    def __init__(self, refuse: int) -> None:
        self.url = ""
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self._refuse = refuse
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/alerts"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        body = await reader.readexactly(length)
        self.requests += 1
        status = "503 Service Unavailable" if self.requests <= self._refuse else "200 OK"
        if self.requests > self._refuse:
            self.bodies.append(json.loads(body))
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = WebhookReceiver(refuse=1)
    await server.start()
    yield server
    await server.stop()


async def _slo_events(running: Running) -> list[Event]:
    return await running.runtime.store.list_events(EventQuery(kind_prefix="slo."))


async def test_error_rate_alert_is_raised_then_resolved_with_events_metric_and_webhook(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with running_coordinator(
        f"sqlite:///{tmp_path / 'slo.db'}",
        slo_interval_s=0.1,
        slo_window_s=1.5,
        slo_min_samples=3,
        alert_webhook=receiver.url,
    ) as running:
        client = running.client
        created = await client.post(
            "/v1/customers",
            json={"id": "acme", "tier": "gold", "alert_thresholds": {"error_rate": 0.25}},
        )
        assert created.status_code == 201, created.text
        settings = WorkerSettings(worker_id="w1", slots=4, heartbeat_interval_s=0.2)
        worker, worker_task = await start_worker(running, settings, REGISTRY)

        async def announced() -> bool:
            types = (await client.get("/v1/workload-types")).json()["items"]
            return {"ok", "broken"} <= {t["name"] for t in types}

        await eventually(announced, what="worker joined, its types announced")

        async def submit(type_name: str) -> None:
            response = await client.post(
                "/v1/workloads", json={"customer_id": "acme", "type": type_name}
            )
            assert response.status_code == 201, response.text

        for _ in range(3):
            await submit("broken")

        async def raised() -> list[Event]:
            return [e for e in await _slo_events(running) if e.kind == "slo.alert"]

        alert = (await eventually(raised, within=20, what="slo.alert"))[0]
        assert (alert.customer_id, alert.data["slo"]) == ("acme", "error_rate")
        assert alert.data["value"] == 1.0 and alert.data["threshold"] == 0.25
        assert alert.data["tier"] == "gold"
        metrics = (await client.get("/metrics")).text
        assert 'niyanta_slo_alert_active{customer="acme",slo="error_rate"} 1.0' in metrics

        # A new leader reads the active alert back from the store.
        standby = SloWatch(
            store=running.runtime.store,
            catalog=running.runtime.catalog,
            metrics=running.runtime.metrics,
            clock=running.runtime.clock,
            window=SloWindow(1.5, 3),
            interval_s=0.1,
        )
        await standby.recover()
        assert standby.active == frozenset({("acme", "error_rate")})

        # Healthy work from now on: once the failures leave the window, the alert resolves.
        async def succeed_steadily() -> None:
            while True:
                await submit("ok")
                await asyncio.sleep(0.1)

        feeder = asyncio.create_task(succeed_steadily())

        async def resolved() -> list[Event]:
            return [e for e in await _slo_events(running) if e.kind == "slo.resolved"]

        try:
            resolution = (await eventually(resolved, within=20, what="slo.resolved"))[0]
        finally:
            feeder.cancel()
        assert (resolution.customer_id, resolution.data["slo"]) == ("acme", "error_rate")
        assert resolution.data["value"] < 0.25 * 0.9
        assert [e.kind for e in await _slo_events(running)] == ["slo.alert", "slo.resolved"]
        metrics = (await client.get("/metrics")).text
        assert 'niyanta_slo_alert_active{customer="acme",slo="error_rate"} 0.0' in metrics

        # The webhook got both, in order; the first POST was refused (503) and retried.
        await eventually(lambda: len(receiver.bodies) == 2, within=20, what="webhook bodies")
        assert receiver.requests == 3
        assert [(b["kind"], b["customer"], b["slo"]) for b in receiver.bodies] == [
            ("slo.alert", "acme", "error_rate"),
            ("slo.resolved", "acme", "error_rate"),
        ]
        assert receiver.bodies[0]["event_id"] == alert.id
        assert receiver.bodies[0]["threshold"] == 0.25
        await worker.close()
        await worker_task
