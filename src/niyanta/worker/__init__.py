"""The worker runtime: joins a coordinator over a broker link and runs replicas."""

from niyanta.worker.config import WorkerSettings
from niyanta.worker.runtime import JoinRefused, Worker

__all__ = ["JoinRefused", "Worker", "WorkerSettings"]
