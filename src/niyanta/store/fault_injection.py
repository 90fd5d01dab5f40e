"""A ``Store`` wrapper that injects faults, for tests that prove the system survives them.

``FaultyStore(inner)`` passes every call to ``inner`` unless a ``FaultRule`` picks the call; a
picked call fails in one of three ways (``FaultKind``):

- ``ERROR``: fails at once; the inner store is not called (nothing happened);
- ``TIMEOUT``: hangs for ``delay_s``, then fails; the inner store is not called;
- ``COMMITTED``: the inner call runs and commits, then the caller sees a failure anyway (the
  acknowledgement was lost: the case every retry must recognise as a duplicate).

The failure raised is ``StoreUnavailable``, what the real backends raise when the server is
unreachable or the connection drops mid-call (a ``COMMITTED`` fault is a connection lost after
COMMIT). A rule picks calls by method name, by the call's number for that method (a schedule:
``calls={1, 3}`` is the first and third call), by probability (drawn from one RNG seeded by
``seed``, so that a failing run repeats exactly), up to ``times`` injections. Rules are tried in
order; the first that picks a call decides. ``injected`` records every fault injected.

    store = FaultyStore(await open_store(url), seed=7)
    store.add(FaultRule(FaultKind.COMMITTED, methods={"apply_writes"}, probability=0.3))
    coordinator_store: Store = store.as_store()
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from niyanta.errors import StoreUnavailable
from niyanta.store.base import Store

NEVER_FAULTED = frozenset({"open", "close"})
"""Lifecycle calls a rule without ``methods`` leaves alone."""


class FaultKind(StrEnum):
    ERROR = "error"
    TIMEOUT = "timeout"
    COMMITTED = "committed"
    """Committed, but the caller saw a failure."""


@dataclass(frozen=True, slots=True)
class FaultRule:
    kind: FaultKind
    methods: Collection[str] | None = None
    """Store method names this rule applies to; None: every method but open and close."""
    probability: float = 1.0
    calls: Collection[int] | None = None
    """Only these calls of each method (1 = its first call since the store was wrapped)."""
    times: int | None = None
    """Inject at most this many faults; None: no limit."""
    delay_s: float = 0.0
    """How long a TIMEOUT hangs before failing."""


@dataclass(frozen=True, slots=True)
class InjectedFault:
    method: str
    call: int
    kind: FaultKind


class FaultyStore:
    def __init__(
        self,
        inner: Store,
        rules: Collection[FaultRule] = (),
        *,
        seed: int = 0,
        error: Callable[[str], Exception] = StoreUnavailable,
    ) -> None:
        self.inner = inner
        self.rules: list[FaultRule] = list(rules)
        self.injected: list[InjectedFault] = []
        self.calls: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._error = error
        self._used: Counter[int] = Counter()

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """No more faults from now on (what was injected stays recorded)."""
        self.rules.clear()

    def as_store(self) -> Store:
        """This wrapper, typed as the protocol it forwards."""
        return cast(Store, self)

    def injected_into(self, method: str, kind: FaultKind | None = None) -> int:
        return sum(1 for f in self.injected if f.method == method and kind in (None, f.kind))

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(target):
            return target  # attributes (``parallel_writes``) and private helpers pass through

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            number = self.calls[name]
            rule = self._pick(name, number)
            if rule is None:
                return await target(*args, **kwargs)
            self.injected.append(InjectedFault(name, number, rule.kind))
            if rule.kind is FaultKind.TIMEOUT:
                await asyncio.sleep(rule.delay_s)
            if rule.kind is FaultKind.COMMITTED:
                await target(*args, **kwargs)
            raise self._error(f"injected fault ({rule.kind.value}) in {name} call {number}")

        return call

    def _pick(self, method: str, number: int) -> FaultRule | None:
        for i, rule in enumerate(self.rules):
            if rule.methods is None:
                if method in NEVER_FAULTED:
                    continue
            elif method not in rule.methods:
                continue
            if rule.calls is not None and number not in rule.calls:
                continue
            if rule.times is not None and self._used[i] >= rule.times:
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            self._used[i] += 1
            return rule
        return None
