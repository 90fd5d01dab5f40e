from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from niyanta.autoscale.policy import Recommendation, desired_replicas, raw_recommendation
from niyanta.model import AutoscalePolicy

POLICY = AutoscalePolicy("acme", "consumer", 1, 20, "backlog", 100.0, cooldown_s=30.0, max_step=4)


def test_scales_up_to_target_in_bounded_steps() -> None:
    decision = desired_replicas(POLICY, 1, 1500.0, [], None, now=0.0)
    assert decision.desired == 5  # ceil(1500/100) = 15, bounded by max_step 4 from 1


def test_within_tolerance_keeps_count() -> None:
    assert raw_recommendation(POLICY, 10, 1050.0) == 10


def test_scale_down_waits_for_cooldown_window() -> None:
    history = [Recommendation(0.0, 10)]
    early = desired_replicas(POLICY, 10, 100.0, history, last_scaled_at=0.0, now=10.0)
    assert early.desired == 10
    later = desired_replicas(POLICY, 10, 100.0, [Recommendation(40.0, 1)], 0.0, now=45.0)
    assert later.desired == 6  # down by at most max_step


def test_brief_dip_inside_window_does_not_shrink() -> None:
    history = [Recommendation(100.0, 8)]
    decision = desired_replicas(POLICY, 8, 50.0, history, last_scaled_at=50.0, now=110.0)
    assert decision.desired == 8


def test_no_metric_keeps_current_within_bounds() -> None:
    assert desired_replicas(POLICY, 25, None, [], None, 0.0).desired == 20


@settings(max_examples=200, deadline=None)
@given(
    backlog=st.lists(st.floats(min_value=0, max_value=10_000), min_size=1, max_size=40),
    start=st.integers(min_value=0, max_value=30),
)
def test_never_outside_bounds_and_converges(backlog: list[float], start: int) -> None:
    current, history, last = start, [], None
    now = 0.0
    for value in backlog:
        decision = desired_replicas(POLICY, current, value, history, last, now)
        assert POLICY.min_replicas <= decision.desired <= POLICY.max_replicas
        bounded = max(POLICY.min_replicas, min(POLICY.max_replicas, current))
        assert abs(decision.desired - bounded) <= POLICY.max_step
        if decision.recommendation is not None:
            history.append(decision.recommendation)
        if decision.desired != current:
            last = now
        current = decision.desired
        now += 5.0
    # Holding the last value steady long enough settles on one count and stays there.
    seen = []
    for _ in range(80):
        decision = desired_replicas(POLICY, current, backlog[-1], history, last, now)
        if decision.recommendation is not None:
            history.append(decision.recommendation)
        if decision.desired != current:
            last = now
        current = decision.desired
        seen.append(current)
        now += 5.0
    assert len(set(seen[-10:])) == 1


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5_000), st.floats(min_value=0.5, max_value=20)),
        min_size=1,
        max_size=60,
    ),
    start=st.integers(min_value=1, max_value=20),
)
def test_no_scale_down_within_the_cooldown_of_any_change(
    steps: list[tuple[float, float]], start: int
) -> None:
    """Flapping guard: whatever the metric does, a scale-down comes at least a cooldown after
    the previous change, and never below a recommendation made within the cooldown."""
    current, history, last = start, [], None
    now = 0.0
    for value, gap in steps:
        now += gap
        decision = desired_replicas(POLICY, current, value, history, last, now)
        if decision.desired < current:
            assert last is None or now - last >= POLICY.cooldown_s
            recent = [r.replicas for r in history if now - r.at <= POLICY.cooldown_s]
            assert decision.desired >= min(current, max(recent, default=0))
        if decision.recommendation is not None:
            history.append(decision.recommendation)
        if decision.desired != current:
            last = now
        current = decision.desired


@given(
    current=st.integers(min_value=1, max_value=20),
    ratio=st.floats(min_value=0.91, max_value=1.09),
)
def test_a_metric_within_the_tolerance_keeps_the_count(current: int, ratio: float) -> None:
    metric = current * POLICY.target * ratio
    decision = desired_replicas(POLICY, current, metric, [], None, now=100.0)
    assert decision.desired == current
