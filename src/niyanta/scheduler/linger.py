"""How long a tier keeps the guaranteed capacity it needed (``Tier.guarantee_linger_s``).

Without it, the slot a platinum replica frees under a bronze backlog goes to bronze in the same
round, and the next platinum arrival has to take it back by preemption (a checkpoint, a yield,
another round). With it, the most guaranteed capacity the tier needed (what it ran plus what its
replicas waited for) stays held against lower tiers until ``guarantee_linger_s`` after it last
needed that much, so a steady stream of arrivals finds it free; one replica more than that
peak is held as well (within the guarantee), so that an arrival one above it is placed in its
first round too. Counting the waiting replicas matters: an arrival that overlaps the end of its
predecessor needs two slots, not the one the tier ever ran at once. Pure functions over plain
data: the scheduling loop keeps the state between rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from niyanta.model import Tier
from niyanta.scheduler.types import TierUse


@dataclass(frozen=True, slots=True)
class Lingering:
    """The most guaranteed capacity a tier needed lately, held for it until ``until``."""

    need: TierUse
    until: float


def _covered(need: TierUse, tier: Tier) -> TierUse:
    """The part of ``need`` the tier's guarantee covers."""
    return TierUse(
        min(need.slots, tier.guaranteed_slots),
        min(need.cpu, tier.guaranteed_cpu),
        min(need.memory_mb, float(tier.guaranteed_memory_mb)),
    )


def observe_demand(
    previous: Mapping[str, Lingering],
    demand: Mapping[str, TierUse],
    tiers: Mapping[str, Tier],
    now: float,
) -> dict[str, Lingering]:
    """The lingering state after a round that saw each tier need ``demand``
    (``SchedulerDecision.tier_demand``): a tier's peak grows to what it needs now and restarts
    its window while it needs that much; once the window ends, the peak falls to what it needs
    now."""
    state: dict[str, Lingering] = {}
    for name, tier in tiers.items():
        if tier.guarantee_linger_s <= 0:
            continue
        need = _covered(demand.get(name, TierUse()), tier)
        before = previous.get(name)
        if before is None or now >= before.until:
            if need != TierUse():
                state[name] = Lingering(need, now + tier.guarantee_linger_s)
            continue
        peak = TierUse(
            max(before.need.slots, need.slots),
            max(before.need.cpu, need.cpu),
            max(before.need.memory_mb, need.memory_mb),
        )
        until = now + tier.guarantee_linger_s if need == peak else before.until
        state[name] = Lingering(peak, until)
    return state


def _one_more(need: TierUse) -> TierUse:
    """``need`` and one replica more, asking for the average of its replicas' requests."""
    if need.slots == 0:
        return need
    scale = (need.slots + 1) / need.slots
    return TierUse(need.slots + 1, need.cpu * scale, need.memory_mb * scale)


def lingering_use(
    state: Mapping[str, Lingering], tiers: Mapping[str, Tier], now: float
) -> dict[str, TierUse]:
    """What each tier's guarantee keeps held for it now (``SchedulerInput.lingering``): its
    peak and one replica more, within the guarantee. Holding the peak alone, an arrival that
    takes the tier one above it (a run that ended late, two arrivals close together) finds
    no slot and preempts: a checkpoint, a yield and another round (6-11 ms in
    ``bench/tiers.py`` against ~3 ms placed at once, 2-4 of 50 platinum arrivals under the
    bronze flood; 1-2 with the spare replica held)."""
    held: dict[str, TierUse] = {}
    for name, lingering in state.items():
        tier = tiers.get(name)
        if tier is not None and now < lingering.until:
            held[name] = _covered(_one_more(lingering.need), tier)
    return held
