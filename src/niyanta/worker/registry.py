"""Workload types a worker can run: the ``@workload`` decorator and the registry it fills.

A type is registered in code by the decorator (announced by workers on boot) or at runtime from
a ``module:function`` entrypoint (``Registry.load``), which imports the module without a restart.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from niyanta.broker.messages import TypeInfo
from niyanta.errors import UnknownWorkloadType
from niyanta.model import (
    JSON,
    CheckpointPolicy,
    Isolation,
    Resources,
    RetryPolicy,
    WorkloadType,
)
from niyanta.worker.circuit_breaker import BreakerPolicy

if TYPE_CHECKING:
    from niyanta.worker.context import WorkloadContext

Handler = Callable[["WorkloadContext"], Awaitable[JSON]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class WorkloadDefinition:
    """A registered type: its defaults and the code that runs it."""

    type: WorkloadType
    handler: Handler
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)

    @property
    def key(self) -> tuple[str, str]:
        return (self.type.name, self.type.version)

    def type_info(self) -> TypeInfo:
        return TypeInfo(
            name=self.type.name,
            version=self.type.version,
            entrypoint=self.type.entrypoint,
            resources_cpu=self.type.resources.cpu,
            resources_memory_mb=self.type.resources.memory_mb,
            isolation=self.type.isolation.value,
            retry={k: float(v) for k, v in dataclasses.asdict(self.type.retry).items()},
            checkpoint=dataclasses.asdict(self.type.checkpoint),
            timeout_s=self.type.timeout_s,
        )


def entrypoint_of(handler: Callable[..., Any]) -> str | None:
    """``module:qualname`` when another process can import the handler by that name."""
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname:
        return None
    return f"{module}:{qualname}"


def import_entrypoint(entrypoint: str) -> Callable[..., Any]:
    """Import ``module:function`` (the function may be a dotted attribute path)."""
    module_name, sep, attr_path = entrypoint.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"entrypoint {entrypoint!r} is not of the form module:function")
    target: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"entrypoint {entrypoint!r} is not callable")
    return target  # type: ignore[no-any-return]


class Registry:
    def __init__(self) -> None:
        self._definitions: dict[tuple[str, str], WorkloadDefinition] = {}

    def add(self, definition: WorkloadDefinition) -> None:
        existing = self._definitions.get(definition.key)
        if existing is not None and not _same_code(existing.handler, definition.handler):
            name, version = definition.key
            raise ValueError(f"workload type {name!r} version {version!r} is already registered")
        self._definitions[definition.key] = definition

    def get(self, name: str, version: str) -> WorkloadDefinition:
        definition = self._definitions.get((name, version))
        if definition is None:
            raise UnknownWorkloadType(f"workload type {name!r} version {version!r} is not loaded")
        return definition

    def definitions(self) -> list[WorkloadDefinition]:
        return list(self._definitions.values())

    def type_infos(self) -> list[TypeInfo]:
        return [definition.type_info() for definition in self._definitions.values()]

    def load(self, info: TypeInfo) -> WorkloadDefinition:
        """Register a type announced at runtime by importing its entrypoint. The announced
        resources and isolation win over the decorator's, since they are what was registered."""
        if info.entrypoint is None:
            raise ValueError(f"workload type {info.name!r} has no entrypoint to import")
        target = import_entrypoint(info.entrypoint)
        decorated: WorkloadDefinition | None = getattr(target, "__niyanta_workload__", None)
        base = decorated.type if decorated is not None else WorkloadType(name=info.name)
        workload_type = replace(
            base,
            name=info.name,
            version=info.version,
            entrypoint=info.entrypoint,
            resources=Resources(cpu=info.resources_cpu, memory_mb=info.resources_memory_mb),
            isolation=Isolation(info.isolation),
            retry=replace(base.retry, **_fields(info.retry, RetryPolicy, "retry")),
            checkpoint=replace(
                base.checkpoint, **_fields(info.checkpoint, CheckpointPolicy, "checkpoint")
            ),
            timeout_s=info.timeout_s if info.timeout_s is not None else base.timeout_s,
        )
        definition = WorkloadDefinition(
            type=workload_type,
            handler=target,
            breaker=decorated.breaker if decorated is not None else BreakerPolicy(),
        )
        self._definitions[definition.key] = definition
        return definition


def _same_code(a: Handler, b: Handler) -> bool:
    # A module imported twice (e.g. as a script and as a package) yields distinct but
    # equivalent function objects; they are the same workload.
    return a is b or entrypoint_of(a) == entrypoint_of(b) is not None


default_registry = Registry()
"""The registry ``@workload`` fills unless given another one."""


def workload(
    name: str,
    *,
    version: str = "1",
    resources: Mapping[str, float] | None = None,
    retry: Mapping[str, float] | None = None,
    checkpoint: Mapping[str, float] | None = None,
    timeout_s: float | None = None,
    isolation: str = "async",
    breaker: Mapping[str, float] | None = None,
    registry: Registry | None = None,
) -> Callable[[H], H]:
    """Register an async handler ``(ctx) -> JSON`` as a workload type.

    ``resources``: ``cpu`` and ``memory_mb``; ``retry``: fields of ``RetryPolicy``;
    ``checkpoint``: fields of ``CheckpointPolicy``; ``breaker``: ``failure_threshold`` and
    ``cooldown_s`` of the circuit breakers of its dependencies; ``isolation``: ``"async"`` (an
    asyncio task) or ``"process"`` (a child process with memory and CPU limits; the handler
    must then be importable by module and name).
    """
    if not name:
        raise ValueError("a workload type needs a name")
    mode = Isolation(isolation)
    resources_value = Resources(**_fields(resources, Resources, "resources"))
    retry_value = RetryPolicy(**_fields(retry, RetryPolicy, "retry"))
    checkpoint_value = CheckpointPolicy(**_fields(checkpoint, CheckpointPolicy, "checkpoint"))
    breaker_value = BreakerPolicy(**_fields(breaker, BreakerPolicy, "breaker"))
    target = registry if registry is not None else default_registry

    def register(handler: H) -> H:
        entrypoint = entrypoint_of(handler)
        if mode is Isolation.PROCESS and entrypoint is None:
            raise ValueError(
                f"workload {name!r} asks for process isolation, so its handler must be a "
                "module-level function importable by name"
            )
        definition = WorkloadDefinition(
            type=WorkloadType(
                name=name,
                version=version,
                entrypoint=entrypoint,
                resources=resources_value,
                retry=retry_value,
                checkpoint=checkpoint_value,
                timeout_s=timeout_s,
                isolation=mode,
            ),
            handler=handler,
            breaker=breaker_value,
        )
        target.add(definition)
        handler.__niyanta_workload__ = definition  # type: ignore[attr-defined]
        return handler

    return register


def _fields(values: Mapping[str, Any] | None, cls: Any, what: str) -> dict[str, Any]:
    if not values:
        return {}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {what} field(s) {sorted(unknown)}; known: {sorted(known)}")
    return dict(values)
