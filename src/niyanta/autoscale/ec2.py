"""Scale a pool's EC2 Auto Scaling group (``set_desired_capacity``).

boto3 is an optional dependency (the ``aws`` extra); its calls block, so they run in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from niyanta.errors import InvalidInput


class Ec2AutoScalingGroupScaler:
    def __init__(self, groups: Mapping[str, str], client: Any | None = None) -> None:
        """``groups`` maps pool -> Auto Scaling group name; ``client`` is a boto3
        ``autoscaling`` client (created from the environment when omitted)."""
        if client is None:
            import boto3

            client = boto3.client("autoscaling")
        self._client = client
        self._groups = dict(groups)

    def _group(self, pool: str) -> str:
        name = self._groups.get(pool)
        if name is None:
            raise InvalidInput(f"no Auto Scaling group configured for pool {pool!r}")
        return name

    async def current(self, pool: str) -> int:
        group = self._group(pool)
        answer = await asyncio.to_thread(
            self._client.describe_auto_scaling_groups, AutoScalingGroupNames=[group]
        )
        groups = answer["AutoScalingGroups"]
        if not groups:
            raise InvalidInput(f"Auto Scaling group {group!r} does not exist")
        return int(groups[0]["DesiredCapacity"])

    async def scale(self, pool: str, workers: int) -> None:
        await asyncio.to_thread(
            self._client.set_desired_capacity,
            AutoScalingGroupName=self._group(pool),
            DesiredCapacity=workers,
            HonorCooldown=False,
        )
