"""The ``FleetScaler`` protocol: something that can set how many workers a pool runs.

Implementations: ``kubernetes.py`` (patch a Deployment's scale subresource) and ``ec2.py`` (an
Auto Scaling group's desired capacity). Both are off by default; the coordinator's leader calls
the configured one with ``desired_workers()``'s answer.
"""

from __future__ import annotations

from typing import Protocol


class FleetScaler(Protocol):
    async def current(self, pool: str) -> int:
        """Workers the pool is set to run now."""
        ...

    async def scale(self, pool: str, workers: int) -> None:
        """Ask for ``workers`` workers in the pool."""
        ...
