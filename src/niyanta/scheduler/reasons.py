"""Why a replica stays pending, in words a user can act on."""

from __future__ import annotations

from collections.abc import Sequence

from niyanta.model import LabelSelector, Resources
from niyanta.scheduler.selectors import describe, describe_labels
from niyanta.scheduler.types import WorkerView


def unknown_tier(tier: str) -> str:
    return f"unknown tier {tier}"


def at_cap(customer: str, cap: int) -> str:
    return f"customer {customer} at its cap of {cap}"


def held_for(tier: str) -> str:
    return f"free slots are held for {tier}'s guaranteed capacity"


def cpu_held_for(tier: str, cores: float) -> str:
    unit = "core" if cores == 1 else "cores"
    return f"free cpu is held for {tier}'s guaranteed capacity ({cores:g} {unit} short)"


def memory_held_for(tier: str, memory_mb: float) -> str:
    return f"free memory is held for {tier}'s guaranteed capacity ({memory_mb:g} MB short)"


def waiting_behind(tier: str) -> str:
    return f"waiting behind {tier}"


def no_free_capacity(resources: Resources) -> str:
    asks = []
    if resources.cpu > 0:
        asks.append(f"cpu {resources.cpu:g}")
    if resources.memory_mb > 0:
        asks.append(f"memory {resources.memory_mb} MB")
    return "no free capacity" + (f" for {', '.join(asks)}" if asks else "")


def preempting(count: int, worker: str) -> str:
    plural = "replica" if count == 1 else "replicas"
    return f"preempting {count} lower-tier {plural} on worker {worker}"


def anti_affinity(anti: Sequence[LabelSelector]) -> str:
    matching = " or ".join(describe_labels(s) for s in anti)
    return f"every worker with room runs a replica matching {matching}"


def spread(key: str) -> str:
    return f"spread by {key}: every {key} with room already runs a replica of this workload"


def no_matching_worker(
    workers: Sequence[WorkerView], type_name: str, required: Sequence[LabelSelector]
) -> str:
    """Why no schedulable worker passes the type and hard affinity filters."""
    schedulable = [w for w in workers if w.schedulable]
    if not schedulable:
        return "no schedulable worker"
    typed = [w for w in schedulable if type_name in w.types]
    if not typed:
        return f"no worker runs type {type_name}"
    for selector in required:
        if not any(selector.matches(w.labels) for w in typed):
            if any(selector.matches(w.labels) for w in schedulable):
                return f"no worker {describe(selector)} runs type {type_name}"
            return f"no worker {describe(selector)}"
    return "no worker with " + ", ".join(describe_labels(s) for s in required)


def named_worker_refuses(
    name: str, view: WorkerView | None, type_name: str, required: Sequence[LabelSelector]
) -> str | None:
    """Why the named worker of a hard affinity cannot take the replica, or None."""
    if view is None:
        return f"worker {name} is unknown"
    if not view.schedulable:
        return f"worker {name} is draining or cordoned"
    if type_name not in view.types:
        return f"worker {name} does not run type {type_name}"
    for selector in required:
        if not selector.matches(view.labels):
            return f"worker {name} does not match {describe_labels(selector)}"
    return None
