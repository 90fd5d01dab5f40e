"""A circuit breaker per workload type and named dependency.

It opens after ``failure_threshold`` consecutive transient failures. While it is open, callers
*wait* (they do not fail: a replica that would only fail again is better held back than burning
its retry budget); after ``cooldown_s`` one caller goes through as the half-open probe while the
others keep waiting. A healthy probe closes the breaker and releases everybody; a failed probe
opens it for another cool-down.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from enum import StrEnum

from niyanta.clock import Clock, SystemClock
from niyanta.errors import PermanentError


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


BREAKER_STATE_VALUE: dict[BreakerState, float] = {
    BreakerState.CLOSED: 0.0,
    BreakerState.HALF_OPEN: 1.0,
    BreakerState.OPEN: 2.0,
}
"""How a breaker's state is reported as a heartbeat metric."""


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5
    cooldown_s: float = 10.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.cooldown_s < 0:
            raise ValueError("cooldown_s must not be negative")


def counts_as_dependency_failure(exc: BaseException) -> bool:
    """Transient failures trip the breaker; a permanent error says nothing about the dependency's
    health and a cancellation is not the dependency's doing."""
    return isinstance(exc, Exception) and not isinstance(exc, PermanentError)


class CircuitBreaker:
    def __init__(self, name: str, policy: BreakerPolicy, clock: Clock | None = None) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock or SystemClock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._changed = asyncio.Event()

    @property
    def state(self) -> BreakerState:
        return self._state

    async def acquire(self) -> None:
        """Return when the caller may call the dependency: at once while closed, as the probe
        once the cool-down of an open breaker has passed, otherwise wait."""
        while True:
            if self._state is BreakerState.CLOSED:
                return
            changed = self._changed
            if self._state is BreakerState.OPEN:
                remaining = self._opened_at + self.policy.cooldown_s - self._clock.monotonic()
                if remaining <= 0:
                    self._set_state(BreakerState.HALF_OPEN)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=remaining)
            else:
                await changed.wait()

    def record_success(self) -> None:
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._set_state(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.policy.failure_threshold:
            self._opened_at = self._clock.monotonic()
            self._set_state(BreakerState.OPEN)

    def abandon_probe(self) -> None:
        """The probe was cancelled before it learned anything: let the next waiter probe."""
        if self._state is BreakerState.HALF_OPEN:
            self._opened_at = self._clock.monotonic() - self.policy.cooldown_s
            self._set_state(BreakerState.OPEN)

    def release(self, failure: bool | None) -> None:
        """Record a call's outcome: True a transient failure, False healthy, None unknown."""
        if failure is None:
            self.abandon_probe()
        elif failure:
            self.record_failure()
        else:
            self.record_success()

    def _set_state(self, state: BreakerState) -> None:
        self._state = state
        # Wake every waiter; they re-read the state. A fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()


class BreakerBoard:
    """The breakers of one worker (or one test run), keyed by workload type and dependency."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def get(self, type_name: str, dependency: str, policy: BreakerPolicy) -> CircuitBreaker:
        key = (type_name, dependency)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(f"{type_name}/{dependency}", policy, self._clock)
            self._breakers[key] = breaker
        return breaker

    def metrics(self) -> dict[str, float]:
        """``breaker.<type>.<dependency>``: 0 closed, 1 half-open, 2 open."""
        return {
            f"breaker.{type_name}.{dependency}": BREAKER_STATE_VALUE[breaker.state]
            for (type_name, dependency), breaker in self._breakers.items()
        }
