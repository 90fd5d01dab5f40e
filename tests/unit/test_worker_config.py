"""Worker settings come from arguments or NIYANTA_WORKER_* environment variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from niyanta.worker.config import WorkerSettings


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIYANTA_WORKER_WORKER_ID", "gpu-1")
    monkeypatch.setenv("NIYANTA_WORKER_SLOTS", "7")
    monkeypatch.setenv("NIYANTA_WORKER_LABELS", '{"gpu": "true", "zone": "a"}')
    settings = WorkerSettings()
    assert (settings.worker_id, settings.slots) == ("gpu-1", 7)
    assert settings.labels == {"gpu": "true", "zone": "a"}


def test_defaults_describe_this_machine() -> None:
    settings = WorkerSettings()
    assert settings.worker_id
    assert settings.cpu >= 1
    assert settings.memory_mb > 0
    assert settings.heartbeat_interval_s == 1.0


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(slots=0)
    with pytest.raises(ValidationError):
        WorkerSettings(heartbeat_interval_s=0)
