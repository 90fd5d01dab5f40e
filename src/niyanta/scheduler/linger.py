"""How long a tier keeps the guaranteed capacity it used (``Tier.guarantee_linger_s``).

Without it, the slot a platinum replica frees under a bronze backlog goes to bronze in the same
round, and the next platinum arrival has to take it back by preemption (a checkpoint, a yield,
another round). With it, the most guaranteed capacity the tier used stays held against lower
tiers until ``guarantee_linger_s`` after it last used that much, so a steady stream of arrivals
finds it free. Pure functions over plain data: the scheduling loop keeps the state between
rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from niyanta.model import Tier
from niyanta.scheduler.types import TierUse


@dataclass(frozen=True, slots=True)
class Lingering:
    """The most guaranteed capacity a tier used lately, held for it until ``until``."""

    use: TierUse
    until: float


def _covered(use: TierUse, tier: Tier) -> TierUse:
    """The part of ``use`` the tier's guarantee covers."""
    return TierUse(
        min(use.slots, tier.guaranteed_slots),
        min(use.cpu, tier.guaranteed_cpu),
        min(use.memory_mb, float(tier.guaranteed_memory_mb)),
    )


def observe_use(
    previous: Mapping[str, Lingering],
    use: Mapping[str, TierUse],
    tiers: Mapping[str, Tier],
    now: float,
) -> dict[str, Lingering]:
    """The lingering state after a round that saw each tier hold ``use``: a tier's peak grows
    to what it uses now and restarts its window while it uses that much; once the window ends,
    the peak falls to what it uses now."""
    state: dict[str, Lingering] = {}
    for name, tier in tiers.items():
        if tier.guarantee_linger_s <= 0:
            continue
        now_use = _covered(use.get(name, TierUse()), tier)
        before = previous.get(name)
        if before is None or now >= before.until:
            if now_use != TierUse():
                state[name] = Lingering(now_use, now + tier.guarantee_linger_s)
            continue
        peak = TierUse(
            max(before.use.slots, now_use.slots),
            max(before.use.cpu, now_use.cpu),
            max(before.use.memory_mb, now_use.memory_mb),
        )
        until = now + tier.guarantee_linger_s if now_use == peak else before.until
        state[name] = Lingering(peak, until)
    return state


def lingering_use(state: Mapping[str, Lingering], now: float) -> dict[str, TierUse]:
    """What each tier's guarantee keeps held for it now (``SchedulerInput.lingering``)."""
    return {name: held.use for name, held in state.items() if now < held.until}
