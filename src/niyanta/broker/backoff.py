"""Reconnect delays: exponential, capped, with full jitter so that workers cut off together do not
all dial back at the same instant."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float = 0.05, maximum: float = 5.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)
