"""Helpers shared by the coordinator's integration tests: a coordinator app on a real store and
the in-memory broker, running its lifespan, with an httpx client over ASGI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from niyanta.broker.memory import MemoryHub, MemoryWorkerLink
from niyanta.broker.messages import AnyMessage, Capacity, Hello, TypeInfo
from niyanta.coordinator import CoordinatorSettings, build_app
from niyanta.coordinator.runtime import CoordinatorRuntime
from niyanta.store.base import Store
from niyanta.worker import Worker, WorkerSettings
from niyanta.worker.registry import Registry

M = TypeVar("M", bound=AnyMessage)


@dataclass
class Running:
    app: FastAPI
    client: httpx.AsyncClient
    hub: MemoryHub

    @property
    def runtime(self) -> CoordinatorRuntime:
        runtime: CoordinatorRuntime = self.app.state.runtime
        return runtime


@asynccontextmanager
async def running_coordinator(
    store_url: str, store: Store | None = None, **overrides: Any
) -> AsyncIterator[Running]:
    """A coordinator on ``store_url`` (or on ``store``, opened by the caller)."""
    fields: dict[str, Any] = {
        "store_url": store_url,
        "broker": "memory",
        "coordinator_id": "coordinator-test",
        "lease_check_interval_s": 0.05,
        "schedule_interval_s": 0.2,
    }
    fields.update(overrides)
    settings = CoordinatorSettings(**fields)
    hub = MemoryHub(settings.coordinator_id)
    app = build_app(settings, hub=hub, store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as client:
            yield Running(app, client, hub)


async def eventually(
    probe: Callable[[], Any], within: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Await ``probe()`` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or probe}")
        await asyncio.sleep(interval)


async def start_worker(
    running: Running, settings: WorkerSettings, registry: Registry
) -> tuple[Worker, asyncio.Task[None]]:
    """A real worker runtime on the coordinator's memory hub, running once it has joined."""
    worker = Worker(settings, running.hub.worker_link(settings.worker_id), registry=registry)
    task = asyncio.create_task(worker.run())
    await eventually(
        lambda: settings.worker_id in running.runtime.registry,
        what=f"{settings.worker_id} joined",
    )
    return worker, task


class FakeWorker:
    """A worker scripted by the test: says Hello and records what the coordinator sends."""

    def __init__(self, running: Running, worker_id: str, types: list[str]) -> None:
        self.worker_id = worker_id
        self.link: MemoryWorkerLink = running.hub.worker_link(worker_id)
        self.inbox: asyncio.Queue[AnyMessage] = asyncio.Queue()
        self.welcome: AnyMessage | None = None
        self._types = [TypeInfo(name=t) for t in types]

        async def receive(message: AnyMessage) -> None:
            await self.inbox.put(message)

        self.hello = Hello(
            worker_id=worker_id,
            session=f"session-{worker_id}",
            capacity=Capacity(slots=2),
            types=self._types,
        )

        async def join() -> None:
            self.welcome = await self.link.request(self.hello, timeout=2)

        self.link.on_message(receive)
        self.link.on_connect(join)

    async def next(self, kind: type[M], within: float = 5.0) -> M:
        while True:
            message = await asyncio.wait_for(self.inbox.get(), within)
            if isinstance(message, kind):
                return message

    async def write(self, message: AnyMessage) -> AnyMessage:
        return await self.link.request(message, timeout=5)
