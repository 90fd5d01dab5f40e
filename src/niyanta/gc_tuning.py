"""The garbage collector in the long-running processes.

A full (generation 2) collection walks every object the collector tracks, and most of a
coordinator's are its start-up heap: modules, classes, FastAPI's routes, pydantic's schemas.
Measured on the tier flood fleet (``bench/tiers.py``'s, one process): each full collection
paused the event loop for 60-69 ms, once or twice a run, and the platinum arrival in flight
waited it out (queue wait 74 ms against a p50 of 6). With the start-up heap frozen once it is
built, the same collections take 4-8 ms.

Even those 4-8 ms show: on the same fleet under the flood, 5 full collections in a 15 s run,
each a platinum start in flight could wait out. ``FULL_COLLECTION_EVERY`` makes them ten times
rarer (none in that run). Almost everything these processes allocate dies young (a message, a
request, a transaction's rows) and the younger generations still collect every cycle among it;
what a full collection would find is a rare cycle that outlived two of them."""

from __future__ import annotations

import gc

FULL_COLLECTION_EVERY = 100
"""Younger (generation 1) collections between two looks at a full one (CPython's default: 10;
it then runs only once the objects that reached the oldest generation since the last one are a
quarter of those there)."""


def freeze_startup_heap() -> None:
    """Collect what start-up left behind, then move every surviving object into the
    collector's permanent generation, which no later collection walks, and make full
    collections rarer. Later calls freeze only what was built since."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
