"""Per-customer autoscaling policy as a pure function: metric history in, desired replicas out.

The rule follows the Kubernetes HPA shape, which operators already know: the raw recommendation
is ``ceil(metric_total / target)`` (target is per replica), inside a 10% tolerance band no change
is made, every step is bounded by ``max_step``, and the result is clamped to ``[min, max]``.
Scale-down is stabilised: the recommendation used is the highest one seen over the cooldown
window, and no scale-down happens within the cooldown after any scaling, so a metric that dips
for a moment does not shrink the workload (no flapping). Scale-up acts at once, in bounded steps,
as the HPA does by default: waiting work costs more than an idle replica.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from niyanta.model import AutoscalePolicy

TOLERANCE = 0.10


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    desired: int
    reason: str
    recommendation: Recommendation | None
    """Raw recommendation of this evaluation, to keep in the history for the next one."""


def raw_recommendation(policy: AutoscalePolicy, current: int, metric_total: float) -> int:
    """Replicas needed for ``metric_total`` at ``policy.target`` per replica, before bounds."""
    if policy.target <= 0:
        raise ValueError("autoscale target must be positive")
    if current > 0:
        ratio = metric_total / (policy.target * current)
        if abs(ratio - 1.0) <= TOLERANCE:
            return current
    return math.ceil(metric_total / policy.target) if metric_total > 0 else 0


def _clamp(policy: AutoscalePolicy, value: int) -> int:
    return max(policy.min_replicas, min(policy.max_replicas, value))


def desired_replicas(
    policy: AutoscalePolicy,
    current: int,
    metric_total: float | None,
    history: Sequence[Recommendation],
    last_scaled_at: float | None,
    now: float,
) -> ScaleDecision:
    """Decide the replica count for one workload.

    ``history`` holds earlier raw recommendations (any order); only those within the cooldown
    window count. ``metric_total`` None means no fresh metric: keep the count (inside bounds).
    """
    if metric_total is None:
        bounded = _clamp(policy, current)
        return ScaleDecision(bounded, "no fresh metric" if bounded == current else "bounds", None)
    raw = _clamp(policy, raw_recommendation(policy, current, metric_total))
    rec = Recommendation(now, raw)
    window = [r.replicas for r in history if now - r.at <= policy.cooldown_s] + [raw]
    cooling = last_scaled_at is not None and now - last_scaled_at < policy.cooldown_s
    if raw > current:
        target = min(raw, current + policy.max_step)
        return ScaleDecision(_clamp(policy, target), f"scale up: metric {metric_total:g}", rec)
    stabilised = max(window)
    if stabilised < current and not cooling:
        target = max(stabilised, current - policy.max_step)
        return ScaleDecision(_clamp(policy, target), f"scale down: metric {metric_total:g}", rec)
    return ScaleDecision(_clamp(policy, current), "steady", rec)
