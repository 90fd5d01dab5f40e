"""Reading the traces ``fault-steps`` leaves (see ``tests/faults/workloads.py``): when each
attempt started and from which checkpoint, which steps ran more than once, which writes were
attempted and how each ended."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReplicaTrace:
    name: str
    events: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["e"] == kind]

    def starts(self) -> list[dict[str, Any]]:
        return self.of("start")

    def first_start_after(self, t: float, not_on: str) -> dict[str, Any] | None:
        """The first attempt that began after ``t`` on a worker other than ``not_on``."""
        later = [s for s in self.starts() if s["t"] > t and s["worker"] != not_on]
        return min(later, key=lambda s: s["t"]) if later else None

    def last_acknowledged_seq(self, worker: str) -> int:
        """The highest checkpoint seq ``worker`` saw acknowledged (0: none)."""
        acked = [w["seq"] for w in self.of("write") if w["ok"] and w["worker"] == worker]
        return max(acked, default=0)

    def redone_steps(self) -> int:
        """Steps that ran more than once (each extra run counts)."""
        numbers = [s["n"] for s in self.of("step")]
        return len(numbers) - len(set(numbers))

    def committed_seqs(self) -> list[int]:
        """Acknowledged checkpoint seqs in the order they were attempted."""
        writes = sorted((w for w in self.of("write") if w["ok"]), key=lambda w: w["at"])
        return [w["seq"] for w in writes]

    def committed_fences(self) -> list[int]:
        writes = sorted((w for w in self.of("write") if w["ok"]), key=lambda w: w["at"])
        return [w["fence"] for w in writes]


def read_traces(trace_dir: Path) -> dict[str, ReplicaTrace]:
    traces: dict[str, ReplicaTrace] = {}
    for path in sorted(trace_dir.glob("*.jsonl")):
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        traces[path.stem] = ReplicaTrace(path.stem, sorted(events, key=lambda e: e["t"]))
    return traces


def assert_committed_once_in_order(traces: Iterable[ReplicaTrace], steps: int) -> None:
    """No replica committed twice: its acknowledged checkpoint seqs strictly increase (no
    duplicate), the fences that wrote them never go back (no older holder wrote after a newer
    one)."""
    for trace in traces:
        seqs = trace.committed_seqs()
        assert all(a < b for a, b in pairwise(seqs)), (trace.name, seqs)
        fences = trace.committed_fences()
        assert fences == sorted(fences), (trace.name, fences)
        assert not seqs or seqs[-1] <= steps, (trace.name, seqs)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def figures(**values: Any) -> dict[str, Any]:
    """Print one JSON line of a fault test's figures (shown with ``pytest -s``) and return it."""
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()}
    print("FAULT-FIGURES " + json.dumps(rounded, sort_keys=True))
    return rounded
