"""Coordinator settings, from arguments or ``NIYANTA_COORDINATOR_*`` environment variables."""

from __future__ import annotations

import os
import socket
from typing import Literal

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
    metrics: bool = True
    """Export Prometheus metrics at ``/metrics`` (``NIYANTA_COORDINATOR_METRICS=off``: count
    nothing)."""
    metrics_max_customers: int = Field(default=1000, ge=1)
    """Customers with a label of their own in the metrics; later ones share ``_other``."""

    slo_interval_s: float = Field(default=5.0, gt=0)
    """How often the leader evaluates every customer's SLOs."""
    slo_window_s: float = Field(default=300.0, gt=0)
    """Sliding window the SLO measures are computed over."""
    slo_min_samples: int = Field(default=5, ge=1)
    """Finished attempts a customer needs in the window before an alert can be raised."""
    alert_webhook: str | None = None
    """URL that SLO alerts and resolutions are POSTed to as JSON (retried with backoff)."""
    autoscale_interval_s: float = Field(default=5.0, gt=0)
    """How often the leader evaluates the autoscaling policies."""
    fleet_interval_s: float = Field(default=15.0, gt=0)
    """How often the leader computes the desired workers per pool."""
    fleet_scaler: Literal["none", "kubernetes", "ec2"] = "none"
    """Who acts on the desired workers per pool besides the published metric."""
    fleet_pools: dict[str, str] = Field(default_factory=dict)
    """Pool -> Kubernetes Deployment or EC2 Auto Scaling group name (``pool=name,...``)."""
    fleet_min_workers: int = Field(default=0, ge=0)
    fleet_max_workers: int = Field(default=100, ge=1)
    fleet_slots_per_worker: int = Field(default=4, ge=1)
    """Slots assumed for a pool with no live worker to learn them from."""
    kubernetes_api_url: str | None = None
    """The Kubernetes API; unset: in-cluster (the pod's service account)."""
    kubernetes_namespace: str = "default"
    kubernetes_token_file: str | None = None
    kubernetes_ca_file: str | None = None

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> CoordinatorSettings:
        if self.lease_ttl_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"lease_ttl_s ({self.lease_ttl_s}) must exceed heartbeat_interval_s "
                f"({self.heartbeat_interval_s}): leases are renewed by heartbeats"
            )
        return self

    @model_validator(mode="after")
    def _fleet_bounds(self) -> CoordinatorSettings:
        if self.fleet_min_workers > self.fleet_max_workers:
            raise ValueError("fleet_min_workers must not exceed fleet_max_workers")
        if self.fleet_scaler != "none" and not self.fleet_pools:
            raise ValueError(f"fleet_scaler {self.fleet_scaler} needs fleet_pools (pool=name,...)")
        return self

    @property
    def url(self) -> str:
        return self.advertise_url or f"http://{self.host}:{self.port}"
