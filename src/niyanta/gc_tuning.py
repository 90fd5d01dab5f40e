"""The garbage collector in the long-running processes.

A full (generation 2) collection walks every object the collector tracks, and most of a
coordinator's are its start-up heap: modules, classes, FastAPI's routes, pydantic's schemas.
Measured on the tier flood fleet (``bench/tiers.py``'s, one process): each full collection
paused the event loop for 60-69 ms, once or twice a run, and the platinum arrival in flight
waited it out (queue wait 74 ms against a p50 of 6). With the start-up heap frozen once it is
built, the same collections take 4-8 ms."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect what start-up left behind, then move every surviving object into the
    collector's permanent generation, which no later collection walks. Later calls freeze only
    what was built since."""
    gc.collect()
    gc.freeze()
