"""The coordinator: HTTP API, built-in broker endpoint, leader election, scheduling loop, lease
monitor and the coordinator side of the worker protocol."""

from niyanta.coordinator.app import build_app
from niyanta.coordinator.server import run_coordinator, serve_coordinator
from niyanta.coordinator.settings import CoordinatorSettings

__all__ = ["CoordinatorSettings", "build_app", "run_coordinator", "serve_coordinator"]
