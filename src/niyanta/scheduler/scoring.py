"""How good a feasible worker is for a replica: soft affinity, stickiness, spread or bin-pack.

Candidates are compared by ``(affinity score, utilisation key, worker index)``: the highest
affinity score wins, ties go to the best utilisation key, then to the lowest worker index
(workers are indexed in id order, so ties resolve by worker id).
"""

from __future__ import annotations

from collections.abc import Mapping

from niyanta.model import PreferredSelector
from niyanta.scheduler.types import ScoringPolicy

STICKINESS = 10
"""Score a replica's previous worker earns (data locality, warm cache): as much as a preferred
selector of weight 10, so a strong soft affinity can still pull a replica elsewhere."""


def soft_affinity(preferred: tuple[PreferredSelector, ...], labels: Mapping[str, str]) -> int:
    return sum(p.weight for p in preferred if p.selector.matches(labels))


def utilisation(
    free_slots: int, slots: int, free_cpu: float, cpu: float, free_memory: float, memory: int
) -> float:
    """The fullest accounted dimension, 0.0 (idle) .. 1.0 (full); cpu/memory of 0 are not
    accounted."""
    used = 1.0 - free_slots / slots
    if cpu > 0:
        used = max(used, 1.0 - free_cpu / cpu)
    if memory > 0:
        used = max(used, 1.0 - free_memory / memory)
    return used


def utilisation_key(policy: ScoringPolicy, used: float) -> float:
    """Smaller is better: spread prefers the least utilised worker, bin-pack the most."""
    return used if policy is ScoringPolicy.SPREAD else -used
