"""Run a workload in a child process (``isolation="process"``).

The child is started with the ``spawn`` method (a fresh interpreter: no inherited event loop,
sockets or locks), lowers its CPU priority and pins itself to the cores it was given, limits its
address space (``RLIMIT_AS``) to what it uses after start-up plus the type's ``memory_mb``, then
imports the handler by its entrypoint and runs it. Its ``WorkloadContext`` forwards every call
over a pipe to the parent, which carries it out through the real backend (so the broker link,
the fence and the circuit breakers stay in the worker process) and forwards stop requests back.

A child that exceeds its memory limit ends with ``MemoryError`` (or is killed by the kernel);
either is reported as error class ``resource``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import multiprocessing
import os
import resource
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from niyanta.errors import FencedOut, PermanentError, TransientError
from niyanta.model import JSON, ErrorClass
from niyanta.observability.logging import configure_logging
from niyanta.observability.tracing import current_traceparent, message_context
from niyanta.worker.context import (
    UNKNOWN_FENCE,
    ContextBackend,
    WorkloadContext,
    decode_json,
    encode_json,
)
from niyanta.worker.outcome import ReportedFailure, classify_error, describe_error
from niyanta.worker.registry import WorkloadDefinition, import_entrypoint

OK = "ok"
FENCED = "fenced"
"""Answers to the child's requests besides an error class."""
KILL_WAIT_S = 2.0
"""How long a terminated child may take to exit before it is killed."""
NICE_SPAN = 10
"""A type asking for a fraction ``f`` of a core runs ``round(NICE_SPAN * (1 - f))`` nicer."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """Everything the child needs, as plain picklable values."""

    entrypoint: str
    type_name: str
    params: dict[str, JSON]
    checkpoint: bytes | None
    checkpoint_seq: int
    fence: int
    attempt: int
    customer: str
    workload_id: str
    replica: int
    worker_id: str
    memory_mb: int
    cores: tuple[int, ...]
    nice: int
    traceparent: str | None = None
    """The execute span's context: the child's log lines carry its trace id."""


class CpuPlanner:
    """Spreads isolated children over the cores this worker may use."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def cores_for(self, cpu: float) -> tuple[int, ...]:
        if cpu <= 0:
            return ()
        allowed = sorted(os.sched_getaffinity(0))
        wanted = min(len(allowed), max(1, math.ceil(cpu)))
        start = next(self._turn) * wanted
        return tuple(allowed[(start + i) % len(allowed)] for i in range(wanted))

    @staticmethod
    def nice_for(cpu: float) -> int:
        if cpu <= 0 or cpu >= 1:
            return 0
        return round(NICE_SPAN * (1 - cpu))


async def run_in_child(
    definition: WorkloadDefinition,
    ctx: WorkloadContext,
    backend: ContextBackend,
    planner: CpuPlanner,
) -> JSON:
    """Run the handler in a child process; return its result or raise its failure (a
    ``ReportedFailure`` carrying the child's error class, or ``FencedOut``)."""
    entrypoint = definition.type.entrypoint
    if entrypoint is None:
        raise ReportedFailure(
            ErrorClass.PERMANENT, f"workload type {definition.type.name!r} has no entrypoint"
        )
    cpu = definition.type.resources.cpu
    spec = ChildSpec(
        entrypoint=entrypoint,
        type_name=definition.type.name,
        params=dict(ctx.params),
        checkpoint=None if ctx.checkpoint is None else encode_json(ctx.checkpoint),
        checkpoint_seq=ctx.checkpoint_seq,
        fence=ctx.fence_token,
        attempt=ctx.attempt,
        customer=ctx.customer,
        workload_id=ctx.workload_id,
        replica=ctx.replica,
        worker_id=ctx.worker_id,
        memory_mb=definition.type.resources.memory_mb,
        cores=planner.cores_for(cpu),
        nice=planner.nice_for(cpu),
        traceparent=current_traceparent(),
    )
    mp = multiprocessing.get_context("spawn")
    parent_conn, child_conn = mp.Pipe(duplex=True)
    process = mp.Process(
        target=child_main,
        args=(child_conn, spec),
        name=f"niyanta-{ctx.workload_id}-{ctx.replica}",
        daemon=True,  # a worker that exits takes its children along (no orphan keeps writing)
    )
    process.start()
    child_conn.close()
    session = _ParentSession(parent_conn, ctx, backend)
    try:
        return await session.run(process)
    finally:
        session.close()
        await _reap(process)


class _ParentSession:
    def __init__(self, conn: Connection, ctx: WorkloadContext, backend: ContextBackend) -> None:
        self._conn = conn
        self._ctx = ctx
        self._backend = backend
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[tuple[Any, ...]] = self._loop.create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading = False

    async def run(self, process: multiprocessing.process.BaseProcess) -> JSON:
        self._loop.add_reader(self._conn.fileno(), self._on_readable)
        self._reading = True
        self._spawn(self._forward_stop())
        message = await self._done
        if message[0] == "result":
            _, value, failed_items = message
            self._ctx.failed_items.extend(failed_items)
            return value
        if message[0] == "error":
            _, error_class, text, failed_items = message
            self._ctx.failed_items.extend(failed_items)
            if error_class == ErrorClass.FENCED:
                self._ctx.mark_fenced()
                raise FencedOut(
                    self._ctx.workload_id, self._ctx.replica, self._ctx.fence_token, UNKNOWN_FENCE
                )
            raise ReportedFailure(ErrorClass(error_class), text)
        # The pipe closed with no outcome: the child died.
        await _reap(process)
        code = process.exitcode
        if code == -signal.SIGKILL:
            raise ReportedFailure(
                ErrorClass.RESOURCE, "isolated child was killed (SIGKILL; out of memory?)"
            )
        raise ReportedFailure(ErrorClass.TRANSIENT, f"isolated child exited with code {code}")

    def close(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._conn.fileno())
            self._reading = False
        for task in self._tasks:
            task.cancel()
        self._conn.close()

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._dispatch(self._conn.recv())
        except (EOFError, OSError):
            self._loop.remove_reader(self._conn.fileno())
            self._reading = False
            if not self._done.done():
                self._done.set_result(("died",))

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "checkpoint":
            _, request_id, seq, data = message
            self._spawn(self._checkpoint(request_id, seq, data))
        elif kind == "report":
            _, progress, metrics = message
            self._backend.report(progress, metrics)
        elif kind == "acquire":
            _, request_id, dependency = message
            self._spawn(self._acquire(request_id, dependency))
        elif kind == "release":
            _, dependency, failure = message
            self._backend.release_dependency(dependency, failure)
        elif kind in ("result", "error") and not self._done.done():
            self._done.set_result(message)

    async def _checkpoint(self, request_id: int, seq: int, data: bytes) -> None:
        try:
            await self._backend.write_checkpoint(seq, data)
        except FencedOut:
            self._ctx.mark_fenced()
            self._send(("reply", request_id, FENCED, ""))
            return
        except (PermanentError, TransientError) as exc:
            self._send(("reply", request_id, classify_error(exc).value, str(exc)))
            return
        self._ctx.checkpoint_seq = seq
        self._ctx.checkpoint = decode_json(data)
        self._send(("reply", request_id, OK, ""))

    async def _acquire(self, request_id: int, dependency: str) -> None:
        await self._backend.acquire_dependency(dependency)
        self._send(("reply", request_id, OK, ""))

    async def _forward_stop(self) -> None:
        await self._ctx.wait_cancelled()
        self._send(("stop", self._ctx.stop_reason, self._ctx.fenced))

    def _send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):  # the child is gone: nothing to tell
            self._conn.send(message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _reap(process: multiprocessing.process.BaseProcess) -> None:
    """Wait for the child to exit; terminate, then kill it if it lingers."""
    for action in (None, process.terminate, process.kill):
        if action is not None and process.is_alive():
            action()
        deadline = KILL_WAIT_S if action is not None else 0.5
        waited = 0.0
        while process.is_alive() and waited < deadline:
            await asyncio.sleep(0.02)
            waited += 0.02
        if not process.is_alive():
            process.join()
            return


# --- the child's side ----------------------------------------------------------------------------


def child_main(conn: Connection, spec: ChildSpec) -> None:
    """Entry point of the child process."""
    configure_logging()  # JSON lines on the inherited stderr, like the worker's
    if spec.nice:
        os.nice(spec.nice)
    if spec.cores:
        os.sched_setaffinity(0, spec.cores)
    try:
        handler = import_entrypoint(spec.entrypoint)
    except Exception as exc:
        conn.send(("error", ErrorClass.PERMANENT.value, describe_error(exc), []))
        return
    if spec.memory_mb > 0:
        _limit_address_space(spec.memory_mb)
    with message_context(spec.traceparent):
        asyncio.run(_child_run(conn, spec, handler))


def _limit_address_space(memory_mb: int) -> None:
    # The interpreter and its imports already map a fair amount of address space; the type's
    # memory_mb is what the workload itself may add on top of that.
    with open("/proc/self/statm") as statm:
        baseline = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = baseline + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


async def _child_run(conn: Connection, spec: ChildSpec, handler: Any) -> None:
    loop = asyncio.get_running_loop()
    backend = _PipeBackend(conn)
    ctx = WorkloadContext(
        backend=backend,
        params=spec.params,
        checkpoint=decode_json(spec.checkpoint),
        checkpoint_seq=spec.checkpoint_seq,
        fence_token=spec.fence,
        attempt=spec.attempt,
        customer=spec.customer,
        workload_id=spec.workload_id,
        replica=spec.replica,
        worker_id=spec.worker_id,
        type_name=spec.type_name,
    )
    backend.ctx = ctx
    loop.add_reader(conn.fileno(), backend.on_readable)
    outcome: tuple[Any, ...]
    try:
        result = await handler(ctx)
        outcome = ("result", result, ctx.failed_items)
    except Exception as exc:  # MemoryError included: classified as the resource class
        outcome = ("error", classify_error(exc).value, describe_error(exc), ctx.failed_items)
    loop.remove_reader(conn.fileno())
    try:
        conn.send(outcome)
    except Exception as exc:  # an unpicklable result
        conn.send(("error", ErrorClass.PERMANENT.value, describe_error(exc), ctx.failed_items))


class _PipeBackend:
    """The child's ContextBackend: every call goes to the parent over the pipe."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[str, str]]] = {}
        self.ctx: WorkloadContext | None = None

    def on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._dispatch(self._conn.recv())
        except (EOFError, OSError):
            # The parent is gone: this replica can write nothing any more.
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            if self.ctx is not None:
                self.ctx.mark_fenced()
            for future in self._pending.values():
                if not future.done():
                    future.set_result((FENCED, "the worker is gone"))

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        if message[0] == "reply":
            _, request_id, status, detail = message
            future = self._pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result((status, detail))
        elif message[0] == "stop" and self.ctx is not None:
            _, reason, fenced = message
            if fenced:
                self.ctx.mark_fenced()
            else:
                self.ctx.request_stop(reason)

    async def _ask(self, message: tuple[Any, ...]) -> tuple[str, str]:
        """Send a request to the parent; its answer is (status, detail)."""
        request_id = message[1]
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._conn.send(message)
        return await future

    async def write_checkpoint(self, seq: int, data: bytes) -> None:
        status, detail = await self._ask(("checkpoint", next(self._ids), seq, data))
        if status == OK:
            return
        if status == FENCED:
            ctx = self.ctx
            assert ctx is not None
            raise FencedOut(ctx.workload_id, ctx.replica, ctx.fence_token, UNKNOWN_FENCE)
        if status == ErrorClass.PERMANENT:
            raise PermanentError(detail)
        raise TransientError(detail)

    def report(self, progress: float | None, metrics: Mapping[str, float]) -> None:
        self._conn.send(("report", progress, dict(metrics)))

    async def acquire_dependency(self, dependency: str) -> None:
        await self._ask(("acquire", next(self._ids), dependency))

    def release_dependency(self, dependency: str, failure: bool | None) -> None:
        self._conn.send(("release", dependency, failure))
