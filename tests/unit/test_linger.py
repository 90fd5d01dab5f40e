"""How long a tier keeps the guaranteed capacity it used (``scheduler.linger``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from niyanta.model import Tier
from niyanta.scheduler.linger import Lingering, lingering_use, observe_demand
from niyanta.scheduler.types import TierUse

PLATINUM = Tier("platinum", 400, guaranteed_slots=4, guaranteed_cpu=2.0, guarantee_linger_s=1.0)
TIERS = {"platinum": PLATINUM, "bronze": Tier("bronze", 100)}


def test_the_most_a_tier_needed_stays_held_until_the_linger_after_it_last_needed_that_much() -> (
    None
):
    state: dict[str, Lingering] = {}
    for at, slots in ((0.0, 2), (0.5, 1), (0.9, 0)):
        state = observe_demand(state, {"platinum": TierUse(slots=slots)}, TIERS, at)
    # The peak, and one replica more for the next arrival.
    assert lingering_use(state, TIERS, 0.95) == {"platinum": TierUse(slots=3)}
    assert lingering_use(state, TIERS, 1.0) == {}
    state = observe_demand(state, {"platinum": TierUse(slots=1)}, TIERS, 1.0)
    assert lingering_use(state, TIERS, 1.9) == {"platinum": TierUse(slots=2)}


def test_needing_the_peak_again_restarts_the_window() -> None:
    state = observe_demand({}, {"platinum": TierUse(slots=1)}, TIERS, 0.0)
    state = observe_demand(state, {"platinum": TierUse(slots=1)}, TIERS, 0.8)
    state = observe_demand(state, {}, TIERS, 1.2)
    assert lingering_use(state, TIERS, 1.7) == {"platinum": TierUse(slots=2)}
    assert lingering_use(state, TIERS, 1.8) == {}


def test_only_what_the_guarantee_covers_lingers_and_tiers_without_a_linger_keep_nothing() -> None:
    use = {"platinum": TierUse(9, 5.0, 512.0), "bronze": TierUse(slots=20)}
    state = observe_demand({}, use, TIERS, 0.0)
    assert lingering_use(state, TIERS, 0.5) == {"platinum": TierUse(4, 2.0, 0.0)}


def test_the_spare_replica_asks_for_the_average_of_the_peak_s_requests() -> None:
    state = observe_demand({}, {"platinum": TierUse(2, 0.5, 256.0)}, TIERS, 0.0)
    assert lingering_use(state, TIERS, 0.5) == {"platinum": TierUse(3, 0.75, 0.0)}
    assert lingering_use(state, {}, 0.5) == {}  # a tier deleted since holds nothing


uses = st.builds(
    TierUse,
    st.integers(0, 10),
    st.floats(0, 8, allow_nan=False),
    st.floats(0, 8192, allow_nan=False),
)


@given(st.lists(st.tuples(st.floats(0, 0.6, allow_nan=False), uses), max_size=20))
def test_what_lingers_is_within_the_guarantee_and_at_least_what_the_tier_needed_last(
    steps: list[tuple[float, TierUse]],
) -> None:
    state: dict[str, Lingering] = {}
    now = 0.0
    for gap, use in steps:
        now += gap
        state = observe_demand(state, {"platinum": use, "bronze": use}, TIERS, now)
        held = lingering_use(state, TIERS, now).get("platinum", TierUse())
        assert held.slots <= PLATINUM.guaranteed_slots and held.cpu <= PLATINUM.guaranteed_cpu
        assert held.memory_mb == 0.0  # platinum guarantees no memory here
        assert held.slots >= min(use.slots, 4) and held.cpu >= min(use.cpu, 2.0)
        assert "bronze" not in state
    assert lingering_use(state, TIERS, now + PLATINUM.guarantee_linger_s) == {}
