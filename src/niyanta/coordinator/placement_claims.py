"""Placements a round has decided that another round, running beside it, may not see in the
store yet.

An express round (``SchedulingLoop.submitted``) runs while the regular round is in flight. Each
reads the store's active replicas at its start; the other's placements reach the store only when
its assignment commits. Both rounds live in this one process and decide synchronously, so each
decision is taken with every placement decided before it: a round counts the claims that its
read of the store may have missed (made, or committed, after that read began) as running, and
leaves claimed replicas out of what it places. A claim is dropped once no round that began
before its commit is still open, or at once when its assignment was refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from niyanta.model import ReplicaKey
from niyanta.scheduler.types import RunningReplica


@dataclass(slots=True)
class _Claim:
    replica: RunningReplica
    committed: int | None = None
    """The epoch its assignment committed in (None: not yet)."""


class PlacementClaims:
    def __init__(self) -> None:
        self._claims: dict[ReplicaKey, _Claim] = {}
        self._epoch = 0
        self._open: list[int] = []

    def open_round(self) -> int:
        """Call before the round reads the store; the token for the calls below."""
        self._open.append(self._epoch)
        return self._epoch

    def claimed(self) -> frozenset[ReplicaKey]:
        """Replicas some round is placing or has just placed: no other round places them."""
        return frozenset(self._claims)

    def unseen_by(self, token: int) -> list[RunningReplica]:
        """Placements the round of ``token`` may not have read from the store."""
        return [
            c.replica for c in self._claims.values() if c.committed is None or c.committed > token
        ]

    def claim(self, replicas: Iterable[RunningReplica]) -> None:
        """Placements just decided (before their assignment is written)."""
        for replica in replicas:
            self._claims[replica.key] = _Claim(replica)

    def settle(self, keys: Iterable[ReplicaKey], assigned: Iterable[ReplicaKey]) -> None:
        """The assignment of ``keys`` has ended: ``assigned`` committed, the rest were refused
        (or the write failed)."""
        self._epoch += 1
        committed = set(assigned)
        for key in keys:
            if key in committed:
                self._claims[key].committed = self._epoch
            else:
                self._claims.pop(key, None)

    def close_round(self, token: int) -> None:
        self._open.remove(token)
        oldest = min(self._open, default=self._epoch)
        for key, c in list(self._claims.items()):
            if c.committed is not None and c.committed <= oldest:
                del self._claims[key]

    def __len__(self) -> int:
        return len(self._claims)
