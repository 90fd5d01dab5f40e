"""One replica running on this worker: its context backend (checkpoints, progress, breakers), its
lease, how it is stopped, and the Result it reports when it ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Protocol

from niyanta.broker.messages import (
    AnyMessage,
    CheckpointMsg,
    InventoryItem,
    Progress,
    Refusal,
    Result,
    StartReplica,
)
from niyanta.clock import Clock
from niyanta.errors import FencedOut, NiyantaError, PermanentError, TransientError
from niyanta.model import ErrorClass, ReplicaKey
from niyanta.observability.logging import bind_workload_context
from niyanta.observability.tracing import context_from_traceparent, current_traceparent, tracer
from niyanta.worker.circuit_breaker import BreakerBoard, CircuitBreaker
from niyanta.worker.config import WorkerSettings
from niyanta.worker.context import UNKNOWN_FENCE, WorkloadContext, decode_json, encode_json
from niyanta.worker.executor import Executor
from niyanta.worker.outcome import Outcome, OutcomeKind, decide_outcome
from niyanta.worker.registry import WorkloadDefinition

FENCED_OUT = "fenced_out"
REFUSALS_THAT_ARE_PERMANENT = frozenset({"too_large", "malformed"})


class ReplicaPort(Protocol):
    """What a replica needs of its worker."""

    settings: WorkerSettings
    clock: Clock
    breakers: BreakerBoard
    executor: Executor

    async def deliver(self, message: AnyMessage, wanted: Callable[[], bool]) -> AnyMessage | None:
        """Send a request until it is answered (same id on every retry) or no longer
        ``wanted()``; None in the latter case."""
        ...

    async def post(self, message: AnyMessage) -> None:
        """Send without waiting for an answer; a message that cannot be sent is dropped."""
        ...


class ReplicaRun:
    def __init__(
        self,
        port: ReplicaPort,
        start: StartReplica,
        definition: WorkloadDefinition | None,
        lookup_error: NiyantaError | None = None,
    ) -> None:
        self.key = ReplicaKey(start.workload_id, start.index)
        self.fence = start.fence
        self._start = start
        self.type_name = start.type_name
        self.lease_ttl_s = start.lease_ttl_s
        self.lease_from = port.clock.monotonic()
        """Monotonic time the current lease runs from (assignment, then each granted
        heartbeat that listed this replica)."""
        self._port = port
        self.definition = definition
        self._lookup_error = lookup_error
        self.ctx = WorkloadContext(
            backend=self,
            params=start.params,
            checkpoint=decode_json(start.checkpoint),
            checkpoint_seq=start.checkpoint_seq,
            fence_token=start.fence,
            attempt=start.attempt,
            customer=start.customer_id,
            workload_id=start.workload_id,
            replica=start.index,
            worker_id=port.settings.worker_id,
            type_name=start.type_name,
        )
        self.log = self.ctx.logger
        self.task: asyncio.Task[None] | None = None
        self._cutoff: asyncio.TimerHandle | None = None
        self._progress = 0.0
        self._metrics: dict[str, float] = {}
        self._dirty = False
        self._last_flush = float("-inf")
        self._flusher: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def launch(self, on_finished: Callable[[ReplicaRun], None]) -> None:
        self.task = asyncio.create_task(self._run(), name=f"replica:{self.key}")
        self.task.add_done_callback(lambda _: on_finished(self))

    @property
    def resources_cpu(self) -> float:
        return self.definition.type.resources.cpu if self.definition else 0.0

    @property
    def resources_memory_mb(self) -> int:
        return self.definition.type.resources.memory_mb if self.definition else 0

    def inventory_item(self) -> InventoryItem:
        return InventoryItem(
            workload_id=self.key.workload_id,
            index=self.key.index,
            fence=self.fence,
            checkpoint_seq=self.ctx.checkpoint_seq,
        )

    def stop(self, reason: str) -> None:
        """Ask the workload to checkpoint and return; cut it off after the grace period."""
        if reason == "fenced":
            self.fence_out("stopped as fenced", at_once=True)
            return
        self.log.info("replica stop requested", reason=reason)
        self.ctx.request_stop(reason)
        self._cut_off_after(self._port.settings.stop_grace_s)

    def fence_out(self, why: str, *, at_once: bool) -> None:
        """This replica is no longer ours: write nothing more for it. ``at_once`` cancels the
        workload now (lease lost); otherwise it gets the grace period to unwind."""
        if not self.ctx.fenced:
            self.log.warning("replica fenced out", why=why)
        self.ctx.mark_fenced()
        if at_once:
            self._cut_off_after(0)
        else:
            self._cut_off_after(self._port.settings.stop_grace_s)

    def abandon(self) -> None:
        """The worker is closing: cut the replica off now; it writes nothing more."""
        self.ctx.mark_fenced()
        self._cut_off_after(0)

    def lease_expired(self, now: float) -> bool:
        return now - self.lease_from > self.lease_ttl_s

    def _cut_off_after(self, delay: float) -> None:
        task = self.task
        if task is None or task.done():
            return
        if self._cutoff is not None:
            if delay > 0:
                return
            self._cutoff.cancel()
        self._cutoff = asyncio.get_running_loop().call_later(delay, task.cancel)

    async def _run(self) -> None:
        """The execute span (a child of the coordinator's dispatch) and the workload's log keys
        hold for everything this task and the tasks it creates do, workload code included."""
        # This task is created while the Started reply is on its way out, and nats-py writes
        # from a task of its own: yield once so the reply leaves before the workload runs (the
        # coordinator records the start, and the next placement may wait on it, when it comes).
        await asyncio.sleep(0)
        start = self._start
        with (
            bind_workload_context(
                customer=start.customer_id,
                workload=start.workload_id,
                replica=start.index,
                worker=self._port.settings.worker_id,
                fence=start.fence,
                attempt=start.attempt,
            ),
            tracer.start_as_current_span(
                "workload.execute",
                context=context_from_traceparent(start.traceparent),
                attributes={
                    "niyanta.workload": start.workload_id,
                    "niyanta.replica": start.index,
                    "niyanta.attempt": start.attempt,
                    "niyanta.type": start.type_name,
                },
            ) as span,
        ):
            self.log.info("replica started", seq=start.checkpoint_seq)
            outcome = await self._execute()
            span.set_attribute("niyanta.outcome", outcome.kind.value)
            if self._cutoff is not None:
                self._cutoff.cancel()
            await self._flush_progress()
            await self._report(outcome)

    async def _execute(self) -> Outcome:
        try:
            if self.definition is None:
                raise PermanentError(str(self._lookup_error))
            result = await self._port.executor.run(self.definition, self.ctx, self)
            encode_json(result, "result")  # refused here, not by the encoder of the Result
        except asyncio.CancelledError as exc:
            # Cut off after a stop's grace period, or fenced at once: decide what to say
            # (possibly nothing). The task itself is not cancelled any more from here on, unless
            # the worker is closing, in which case the report below is cancelled in turn.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return self._decide(error=exc)
        except Exception as exc:
            return self._decide(error=exc)
        return self._decide(result=result)

    def _decide(self, *, result: object = None, error: BaseException | None = None) -> Outcome:
        outcome = decide_outcome(
            stop_reason=self.ctx.stop_reason,
            fenced=self.ctx.fenced,
            failed_items=self.ctx.failed_items,
            result=result,
            error=error,
        )
        self.log.info(
            "replica finished",
            outcome=outcome.kind.value,
            error_class=outcome.error_class,
            error=outcome.error_message,
        )
        return outcome

    async def _report(self, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.SILENT:
            return
        message = Result(
            workload_id=self.key.workload_id,
            index=self.key.index,
            fence=self.fence,
            outcome=outcome.kind.value,
            result=outcome.result,
            error_class=outcome.error_class.value if outcome.error_class else None,
            error_message=outcome.error_message,
            failed_items=outcome.failed_items,
            traceparent=current_traceparent(),
        )
        reply = await self._port.deliver(message, self._may_write)
        if isinstance(reply, Refusal) and reply.code in REFUSALS_THAT_ARE_PERMANENT:
            # The result itself cannot be carried (e.g. too large): report that instead, so
            # the replica ends rather than being run again for the same result.
            self.log.error("result refused", code=reply.code, reason=reply.reason)
            message = Result(
                workload_id=self.key.workload_id,
                index=self.key.index,
                fence=self.fence,
                outcome=OutcomeKind.FAILED.value,
                error_class=ErrorClass.PERMANENT.value,
                error_message=f"result refused: {reply.code}: {reply.reason}",
                traceparent=current_traceparent(),
            )
            reply = await self._port.deliver(message, self._may_write)
        if isinstance(reply, Refusal):
            log = self.log.info if reply.code == FENCED_OUT else self.log.error
            log("result refused", code=reply.code, reason=reply.reason)

    def _may_write(self) -> bool:
        return not self.ctx.fenced

    # --- ContextBackend ------------------------------------------------------------------------

    async def write_checkpoint(self, seq: int, data: bytes) -> None:
        attributes = {"niyanta.checkpoint_seq": seq, "niyanta.checkpoint_bytes": len(data)}
        with tracer.start_as_current_span("workload.checkpoint", attributes=attributes):
            await self._write_checkpoint(seq, data)

    async def _write_checkpoint(self, seq: int, data: bytes) -> None:
        message = CheckpointMsg(
            workload_id=self.key.workload_id,
            index=self.key.index,
            fence=self.fence,
            seq=seq,
            data=data,
            traceparent=current_traceparent(),
        )
        reply = await self._port.deliver(message, self._may_write)
        if reply is None or (isinstance(reply, Refusal) and reply.code == FENCED_OUT):
            self.fence_out("checkpoint refused", at_once=False)
            raise FencedOut(self.key.workload_id, self.key.index, self.fence, UNKNOWN_FENCE)
        if isinstance(reply, Refusal):
            text = f"checkpoint refused: {reply.code}: {reply.reason}"
            if reply.code in REFUSALS_THAT_ARE_PERMANENT:
                raise PermanentError(text)
            raise TransientError(text)

    def report(self, progress: float | None, metrics: Mapping[str, float]) -> None:
        if self.ctx.fenced:
            return
        if progress is not None:
            self._progress = progress
        self._metrics.update(metrics)
        self._dirty = True
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())

    async def acquire_dependency(self, dependency: str) -> None:
        await self._breaker(dependency).acquire()

    def release_dependency(self, dependency: str, failure: bool | None) -> None:
        self._breaker(dependency).release(failure)

    def _breaker(self, dependency: str) -> CircuitBreaker:
        policy = self.definition.breaker if self.definition else None
        assert policy is not None, "a replica without a definition runs no workload code"
        return self._port.breakers.get(self.type_name, dependency, policy)

    async def _flush_soon(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._last_flush + self._port.settings.progress_interval_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await self._flush_progress()

    async def _flush_progress(self) -> None:
        if self._flusher is not None and self._flusher is not asyncio.current_task():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if not self._dirty or self.ctx.fenced:
            return
        message = Progress(
            workload_id=self.key.workload_id,
            index=self.key.index,
            fence=self.fence,
            progress=self._progress,
            metrics=self._metrics,
        )
        self._dirty = False
        self._metrics = {}
        self._last_flush = asyncio.get_running_loop().time()
        await self._port.post(message)
