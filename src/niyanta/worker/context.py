"""``WorkloadContext``: what workload code sees of the system.

One class for every place a workload runs; what its calls do is the job of a ``ContextBackend``:
the worker runtime (writes through the broker), the child-process proxy (forwards to the parent
over a pipe) and the testing kit (records in memory).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import structlog

from niyanta.errors import FencedOut, PermanentError
from niyanta.model import JSON
from niyanta.worker.circuit_breaker import counts_as_dependency_failure

T = TypeVar("T")

UNKNOWN_FENCE = -1
"""``FencedOut.current`` when the refusal did not say which token is current."""


class ContextBackend(Protocol):
    async def write_checkpoint(self, seq: int, data: bytes) -> None:
        """Return once the checkpoint is durable; raise FencedOut when it was refused."""
        ...

    def report(self, progress: float | None, metrics: Mapping[str, float]) -> None:
        """Queue a progress/metrics report (sent without waiting; bursts coalesce)."""
        ...

    async def acquire_dependency(self, dependency: str) -> None:
        """Wait until the dependency's circuit breaker lets a call through."""
        ...

    def release_dependency(self, dependency: str, failure: bool | None) -> None:
        """Record the call's outcome: True a transient failure, False healthy, None unknown
        (cancelled)."""
        ...


def encode_json(value: JSON, what: str = "checkpoint") -> bytes:
    """Compact UTF-8 JSON; a value that is not JSON is a bug in the workload (permanent)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"the {what} is not JSON: {exc}") from exc


def decode_json(data: bytes | None) -> JSON:
    return None if data is None else json.loads(data)


class WorkloadContext:
    """The running replica's view: its inputs, where it runs, and how it reports.

    ``checkpoint`` is the last committed state (``None`` on a fresh start) and follows each
    successful ``save_checkpoint``. ``cancelled`` turns True when the runtime asks the replica to
    stop (``stop_reason`` says why: cancel, pause, preempt, scale_down, drain, fenced); the
    workload should then checkpoint and return.
    """

    def __init__(
        self,
        *,
        backend: ContextBackend,
        params: Mapping[str, JSON],
        checkpoint: JSON,
        checkpoint_seq: int,
        fence_token: int,
        attempt: int,
        customer: str,
        workload_id: str,
        replica: int,
        worker_id: str,
        type_name: str,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._backend = backend
        self.params: dict[str, JSON] = dict(params)
        self.checkpoint: JSON = checkpoint
        self.checkpoint_seq = checkpoint_seq
        self.fence_token = fence_token
        self.attempt = attempt
        self.customer = customer
        self.workload_id = workload_id
        self.replica = replica
        self.worker_id = worker_id
        self.type_name = type_name
        self.logger: structlog.typing.FilteringBoundLogger = logger or structlog.get_logger(
            "niyanta.workload"
        ).bind(
            customer=customer,
            workload=workload_id,
            replica=replica,
            worker=worker_id,
            fence=fence_token,
            attempt=attempt,
        )
        self.failed_items: list[JSON] = []
        self.stop_reason: str | None = None
        self._stopped = asyncio.Event()
        self._fenced = False

    # --- stop and fencing, driven by the runtime ------------------------------------------------

    @property
    def cancelled(self) -> bool:
        return self._stopped.is_set()

    @property
    def fenced(self) -> bool:
        return self._fenced

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopped.set()

    def mark_fenced(self) -> None:
        """No write of this replica may go out any more."""
        self._fenced = True
        self.request_stop("fenced")

    async def wait_cancelled(self) -> None:
        await self._stopped.wait()

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking early when the replica is asked to stop; True if it was."""
        if self._stopped.is_set():
            return True
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    # --- writes -------------------------------------------------------------------------------

    async def save_checkpoint(self, state: JSON) -> None:
        """Commit ``state`` (JSON) durably as the replica's next checkpoint.

        Returns once the coordinator acknowledged it; raises ``niyanta.FencedOut`` when the
        replica is no longer this worker's (then nothing more is written for it)."""
        self._ensure_not_fenced()
        data = encode_json(state)
        seq = self.checkpoint_seq + 1
        try:
            await self._backend.write_checkpoint(seq, data)
        except FencedOut:
            self.mark_fenced()
            raise
        self.checkpoint_seq = seq
        self.checkpoint = json.loads(data)

    async def report_progress(self, fraction: float) -> None:
        """Report progress in [0, 1]; sent without waiting, bursts coalesce (latest wins)."""
        self._ensure_not_fenced()
        self._backend.report(min(1.0, max(0.0, float(fraction))), {})

    async def report_metric(self, name: str, value: float) -> None:
        """Report an autoscaling signal such as ``backlog`` or ``lag``."""
        self._ensure_not_fenced()
        self._backend.report(None, {name: float(value)})

    def record_failed_item(
        self, item: JSON, error: str, index: int | None = None
    ) -> dict[str, JSON]:
        """Record an item that failed while the workload went on (partial failure); the items
        are reported with the replica's result (``failed_items``)."""
        failure: dict[str, JSON] = {"item": item, "error": error}
        if index is not None:
            failure["index"] = index
        self.failed_items.append(failure)
        return failure

    # --- dependencies behind circuit breakers ---------------------------------------------------

    @asynccontextmanager
    async def dependency(self, name: str) -> AsyncIterator[None]:
        """``async with ctx.dependency("billing-api"): ...``: waits while the dependency's
        breaker is open; transient failures inside the block count against it."""
        await self._backend.acquire_dependency(name)
        try:
            yield
        except BaseException as exc:
            failure = counts_as_dependency_failure(exc)
            self._backend.release_dependency(name, True if failure else None)
            raise
        self._backend.release_dependency(name, False)

    async def call(self, dependency: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await ctx.call("billing-api", fetch, url)``: ``fn(*args)`` behind the breaker."""
        async with self.dependency(dependency):
            return await fn(*args)

    def _ensure_not_fenced(self) -> None:
        if self._fenced:
            raise FencedOut(self.workload_id, self.replica, self.fence_token, UNKNOWN_FENCE)
