"""When a failed attempt runs again: exponential backoff with jitter, from the type's policy."""

from __future__ import annotations

import random
from collections.abc import Callable

from niyanta.model import RetryPolicy


def backoff_s(
    policy: RetryPolicy, attempt: int, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): ``initial * multiplier^(n-1)``
    capped at ``max_backoff_s``, then moved by up to ``jitter`` of itself either way so that
    replicas failing together do not all retry at the same instant."""
    base = min(
        policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** max(0, attempt - 1)
    )
    return max(0.0, base * (1.0 + uniform(-policy.jitter, policy.jitter)))


def retry_at(
    policy: RetryPolicy,
    attempt: int,
    now: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """When failed attempt ``attempt`` is retried, or None when it was the last allowed."""
    if attempt >= policy.max_attempts:
        return None
    return now + backoff_s(policy, attempt, uniform)
