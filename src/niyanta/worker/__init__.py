"""The worker: ``Worker`` joins a coordinator over a broker link and runs replicas;
``WorkerSettings`` configures it.

Both load on first use, so that ``import niyanta`` (the SDK, imported by every isolated child
process too) does not load the runtime and its settings machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from niyanta.worker.config import WorkerSettings
    from niyanta.worker.runtime import JoinRefused, Worker

__all__ = ["JoinRefused", "Worker", "WorkerSettings"]

_HOMES = {
    "JoinRefused": "niyanta.worker.runtime",
    "Worker": "niyanta.worker.runtime",
    "WorkerSettings": "niyanta.worker.config",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
