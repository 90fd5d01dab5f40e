"""Per-customer SLO evaluation over a sliding window, as a pure function.

Inputs are finished attempts (queue wait, run time, failed or not) and the targets (the
customer's own alert thresholds override its tier's SLO targets). An alert is raised when a
measure crosses its threshold with at least ``min_samples`` in the window, and resolved once the
measure falls back under ``resolve_ratio`` of the threshold (hysteresis, so that a measure
hovering at the line does not raise and resolve on every evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from niyanta.model import Customer, SloTargets, Tier

QUEUE_WAIT_P95 = "queue_wait_p95_s"
RUN_TIME_P95 = "run_time_p95_s"
ERROR_RATE = "error_rate"
MEASURES = (QUEUE_WAIT_P95, RUN_TIME_P95, ERROR_RATE)


@dataclass(frozen=True, slots=True)
class AttemptSample:
    customer_id: str
    finished_at: float
    queue_wait_s: float
    run_time_s: float
    failed: bool


class AlertState(StrEnum):
    RAISED = "raised"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertChange:
    customer_id: str
    measure: str
    state: AlertState
    value: float
    threshold: float


@dataclass(frozen=True, slots=True)
class SloWindow:
    window_s: float = 300.0
    min_samples: int = 5
    resolve_ratio: float = 0.9


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def thresholds_for(customer: Customer, tier: Tier) -> dict[str, float]:
    slo: SloTargets = tier.slo
    base = {
        QUEUE_WAIT_P95: slo.queue_wait_p95_s,
        RUN_TIME_P95: slo.run_time_p95_s,
        ERROR_RATE: slo.error_rate,
    }
    merged = {k: v for k, v in base.items() if v is not None}
    merged.update({k: v for k, v in customer.alert_thresholds.items() if k in MEASURES})
    return merged


def measure(samples: Sequence[AttemptSample]) -> dict[str, float]:
    return {
        QUEUE_WAIT_P95: percentile([s.queue_wait_s for s in samples], 0.95),
        RUN_TIME_P95: percentile([s.run_time_s for s in samples if not s.failed] or [0.0], 0.95),
        ERROR_RATE: sum(s.failed for s in samples) / len(samples),
    }


def evaluate_slos(
    samples: Iterable[AttemptSample],
    customers: Mapping[str, Customer],
    tiers: Mapping[str, Tier],
    active: frozenset[tuple[str, str]],
    now: float,
    window: SloWindow = SloWindow(),
) -> list[AlertChange]:
    """Alerts to raise and resolve now; ``active`` holds the (customer, measure) pairs raised."""
    by_customer: dict[str, list[AttemptSample]] = {}
    for sample in samples:
        if now - sample.finished_at <= window.window_s:
            by_customer.setdefault(sample.customer_id, []).append(sample)
    changes: list[AlertChange] = []
    for customer_id in sorted(customers):
        customer = customers[customer_id]
        tier = tiers.get(customer.tier)
        if tier is None:
            continue
        thresholds = thresholds_for(customer, tier)
        recent = by_customer.get(customer_id, [])
        values = measure(recent) if len(recent) >= window.min_samples else {}
        for name in MEASURES:
            threshold = thresholds.get(name)
            if threshold is None:
                continue
            is_active = (customer_id, name) in active
            value = values.get(name)
            if value is not None and not is_active and value > threshold:
                changes.append(AlertChange(customer_id, name, AlertState.RAISED, value, threshold))
            elif is_active and (value is None or value < threshold * window.resolve_ratio):
                changes.append(
                    AlertChange(customer_id, name, AlertState.RESOLVED, value or 0.0, threshold)
                )
    return changes
