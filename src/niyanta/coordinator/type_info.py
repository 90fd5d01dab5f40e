"""Workload types on the wire (``TypeInfo`` in Hello and LoadType) and in the store."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from niyanta.broker.messages import TypeInfo
from niyanta.model import CheckpointPolicy, Isolation, Resources, RetryPolicy, WorkloadType

P = TypeVar("P", RetryPolicy, CheckpointPolicy)


def _policy(cls: type[P], values: Mapping[str, float]) -> P:
    """A policy from announced fields, each cast to its field's type (the wire carries floats);
    fields this version does not know are left out."""
    defaults = cls()
    known: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in values:
            known[field.name] = type(getattr(defaults, field.name))(values[field.name])
    return cls(**known)


def type_from_info(info: TypeInfo) -> WorkloadType:
    return WorkloadType(
        name=info.name,
        version=info.version,
        entrypoint=info.entrypoint,
        resources=Resources(info.resources_cpu, info.resources_memory_mb),
        retry=_policy(RetryPolicy, info.retry),
        checkpoint=_policy(CheckpointPolicy, info.checkpoint),
        timeout_s=info.timeout_s,
        isolation=Isolation(info.isolation),
    )


def info_from_type(wtype: WorkloadType) -> TypeInfo:
    return TypeInfo(
        name=wtype.name,
        version=wtype.version,
        entrypoint=wtype.entrypoint,
        resources_cpu=wtype.resources.cpu,
        resources_memory_mb=wtype.resources.memory_mb,
        isolation=wtype.isolation.value,
        retry={k: float(v) for k, v in dataclasses.asdict(wtype.retry).items()},
        checkpoint={k: float(v) for k, v in dataclasses.asdict(wtype.checkpoint).items()},
        timeout_s=wtype.timeout_s,
    )
