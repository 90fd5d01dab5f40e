"""The event loop the long-running processes (coordinator, worker, dev) run on: uvloop where it is
installed (it comes with ``uvicorn[standard]``), else asyncio's own. uvloop does the same work
with less CPU per message and per socket write; measured end to end in ``bench/e2e.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the fastest loop available."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)
