from __future__ import annotations

from niyanta.model import Customer, SloTargets, Tier
from niyanta.slo.evaluator import (
    ERROR_RATE,
    QUEUE_WAIT_P95,
    AlertState,
    AttemptSample,
    evaluate_slos,
    percentile,
)

TIERS = {"gold": Tier("gold", 300, slo=SloTargets(queue_wait_p95_s=2.0, error_rate=0.1))}
CUSTOMERS = {
    "acme": Customer("acme", "gold"),
    "globex": Customer("globex", "gold", alert_thresholds={QUEUE_WAIT_P95: 10.0}),
}


def samples(customer: str, wait: float, n: int, now: float, failed: int = 0) -> list[AttemptSample]:
    return [AttemptSample(customer, now - 1, wait, 1.0, i < failed) for i in range(n)]


def test_raises_on_breach_and_uses_customer_override() -> None:
    data = samples("acme", 3.0, 10, 100.0) + samples("globex", 3.0, 10, 100.0)
    changes = evaluate_slos(data, CUSTOMERS, TIERS, frozenset(), now=100.0)
    assert [(c.customer_id, c.measure, c.state) for c in changes] == [
        ("acme", QUEUE_WAIT_P95, AlertState.RAISED)
    ]


def test_hysteresis_then_resolve() -> None:
    active = frozenset({("acme", QUEUE_WAIT_P95)})
    hovering = evaluate_slos(samples("acme", 1.9, 10, 100.0), CUSTOMERS, TIERS, active, 100.0)
    assert hovering == []
    recovered = evaluate_slos(samples("acme", 1.0, 10, 100.0), CUSTOMERS, TIERS, active, 100.0)
    assert [(c.measure, c.state) for c in recovered] == [(QUEUE_WAIT_P95, AlertState.RESOLVED)]


def test_error_rate_and_window() -> None:
    old = [AttemptSample("acme", 0.0, 0.1, 1.0, True) for _ in range(20)]
    assert evaluate_slos(old, CUSTOMERS, TIERS, frozenset(), now=1000.0) == []
    fresh = samples("acme", 0.1, 10, 1000.0, failed=3)
    changes = evaluate_slos(fresh, CUSTOMERS, TIERS, frozenset(), now=1000.0)
    assert [(c.measure, round(c.value, 2)) for c in changes] == [(ERROR_RATE, 0.3)]


def test_too_few_samples_raise_nothing() -> None:
    assert evaluate_slos(samples("acme", 50.0, 4, 10.0), CUSTOMERS, TIERS, frozenset(), 10.0) == []


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile([7.0], 0.5) == 7.0
