"""Coordinator settings, from arguments or ``NIYANTA_COORDINATOR_*`` environment variables."""

from __future__ import annotations

import os
import socket

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_coordinator_id() -> str:
    return f"coordinator-{socket.gethostname()}-{os.getpid()}"


class CoordinatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NIYANTA_COORDINATOR_", frozen=True)

    store_url: str = "sqlite:///niyanta.db"
    broker: str = "builtin"
    """``memory`` (in-process hub), ``builtin`` (WebSocket at ``/v1/broker``) or ``nats://...``."""
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    coordinator_id: str = Field(default_factory=_default_coordinator_id)
    advertise_url: str | None = None
    """The URL other parts reach this coordinator at (``/v1/cluster``); default from host:port."""
    cluster: str = "default"
    """Names the NATS subjects, so that several clusters can share one NATS."""
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    lease_ttl_s: float = Field(default=5.0, gt=0)
    leader_ttl_s: float = Field(default=2.5, gt=0)
    """Well below the lease TTL: a follower takes over and the workers re-attach to it before
    their replicas' leases lapse, so a leader failover stops no replica."""
    worker_token: str | None = None
    max_params_bytes: int = Field(default=256 * 1024, gt=0)
    schedule_interval_s: float = Field(default=0.5, gt=0)
    """Backstop period of the scheduling loop; rounds are otherwise triggered by events."""
    lease_check_interval_s: float = Field(default=0.25, gt=0)
    """How often the lease monitor requeues replicas whose lease expired."""

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> CoordinatorSettings:
        if self.lease_ttl_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"lease_ttl_s ({self.lease_ttl_s}) must exceed heartbeat_interval_s "
                f"({self.heartbeat_interval_s}): leases are renewed by heartbeats"
            )
        return self

    @property
    def url(self) -> str:
        return self.advertise_url or f"http://{self.host}:{self.port}"
