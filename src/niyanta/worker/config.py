"""Worker settings, from arguments or ``NIYANTA_WORKER_*`` environment variables."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _total_memory_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))
    except (ValueError, OSError):
        return 0


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NIYANTA_WORKER_", frozen=True)

    worker_id: str = Field(default_factory=_default_worker_id)
    labels: dict[str, str] = Field(default_factory=dict)
    slots: int = Field(default=4, ge=1)
    cpu: float = Field(default_factory=lambda: float(os.cpu_count() or 1), ge=0)
    memory_mb: int = Field(default_factory=_total_memory_mb, ge=0)
    token: str | None = None
    """Shared worker token, when the coordinator requires one."""
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    """Used until the coordinator's Welcome sets it."""
    lease_ttl_s: float = Field(default=5.0, gt=0)
    """Used until the coordinator's Welcome sets it."""
    request_timeout_s: float = Field(default=2.0, gt=0)
    """How long a request (checkpoint, result, hello) waits for its reply before it is retried."""
    stop_grace_s: float = Field(default=10.0, ge=0)
    """How long a stopped replica may take to checkpoint and return before it is cut off."""
    progress_interval_s: float = Field(default=0.2, ge=0)
    """Progress reports of one replica are sent at most this often (latest wins)."""
    drain_timeout_s: float = Field(default=60.0, gt=0)
    """How long a drain waits for yields to be acknowledged before leaving anyway."""
    health_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve ``/health`` and ``/ready`` on this port (Kubernetes probes); None: no probe port."""
    health_host: str = "0.0.0.0"
    """Address the probe port listens on."""
