"""The cluster as one round sees it: free capacity, worker classes and the indexes over them.

Workers with the same labels and supported types form a *class*: hard affinity, type support,
topology spread and soft affinity are decided once per class, never per worker. Each class keeps
a heap of its workers that have a free slot, ordered by utilisation key; each *shape* (a type
plus hard and soft affinity, shared by many replicas) keeps, per soft-affinity score, a heap of
its classes ordered by their best worker. Placing a replica touches one worker, one class heap
and, only when a class's best worker gets better (bin-pack), the shape heaps that hold it.

Heap entries are never updated in place: a worker's current key lives in ``key`` and an entry
whose key differs is stale and dropped (or re-pushed) when it reaches the top.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

from niyanta.model import Affinity, LabelSelector, PreferredSelector
from niyanta.scheduler.scoring import soft_affinity, utilisation, utilisation_key
from niyanta.scheduler.selectors import matches_all
from niyanta.scheduler.types import PendingReplica, RunningReplica, ScoringPolicy, WorkerView

UNLIMITED = float("inf")
"""Free cpu/memory of a worker that does not account that resource."""

SPREAD_BY_WORKER = "worker"

WorkerEntry = tuple[float, int]
"""(utilisation key, worker index) in a class heap."""
ClassEntry = tuple[float, int, int]
"""(utilisation key, worker index, class index) in a candidate group heap."""
LabelsKey = tuple[tuple[str, str], ...]


class FreeTotal:
    """Free amount of cpu or memory over the workers a placement could use (schedulable, with
    a free slot): what a tier's guarantee is held out of. Unbounded while one of them does not
    account the resource (a replica waiting for it would have fitted there)."""

    __slots__ = ("accounted", "unbounded")

    def __init__(self) -> None:
        self.accounted = 0.0
        self.unbounded = 0

    def add(self, free: float, sign: int) -> None:
        if free == UNLIMITED:
            self.unbounded += sign
        else:
            self.accounted += sign * max(0.0, free)

    @property
    def value(self) -> float:
        return UNLIMITED if self.unbounded else self.accounted


def labels_key(labels: Mapping[str, str]) -> LabelsKey:
    return tuple(sorted(labels.items()))


class WorkerClass:
    """Schedulable workers with identical labels and types."""

    __slots__ = ("failed_needs", "groups", "heap", "index", "labels", "members", "top", "types")

    def __init__(self, index: int, labels: Mapping[str, str], types: frozenset[str]) -> None:
        self.index = index
        self.labels = labels
        self.types = types
        self.members: list[int] = []
        self.heap: list[WorkerEntry] = []
        self.top: WorkerEntry | None = None
        """The best member with a free slot, or None when every member is full."""
        self.failed_needs: list[tuple[float, float]] = []
        """(cpu, memory) requests no member could fit; capacity only shrinks within a round."""
        self.groups: list[CandidateGroup] = []
        """Groups that must hear when ``top`` gets better."""


class CandidateGroup:
    """The classes of one shape that share one soft-affinity score, by their best worker."""

    __slots__ = ("classes", "heap", "score")

    def __init__(self, score: int, classes: list[WorkerClass]) -> None:
        self.score = score
        self.classes = classes
        self.heap: list[ClassEntry] = [
            (c.top[0], c.top[1], c.index) for c in classes if c.top is not None
        ]
        heapq.heapify(self.heap)
        for c in classes:
            c.groups.append(self)


class Shape:
    """Where replicas of one type with one hard and soft affinity may go, best group first."""

    __slots__ = ("failed_needs", "groups", "score_of")

    def __init__(self, groups: list[CandidateGroup]) -> None:
        self.groups = groups
        self.score_of = {c.index: g.score for g in groups for c in g.classes}
        self.failed_needs: list[tuple[float, float]] = []
        """(cpu, memory) requests that fit nowhere in this shape (any replica of the shape)."""


class Cluster:
    def __init__(
        self,
        workers: Iterable[WorkerView],
        running: Sequence[RunningReplica],
        policy: ScoringPolicy,
        count_free_resources: bool = False,
    ) -> None:
        self.views = sorted(workers, key=lambda w: w.id)
        self.index = {w.id: i for i, w in enumerate(self.views)}
        self._direction = utilisation_key(policy, 1.0)
        """+1.0 or -1.0: utilisation times this is the heap key."""
        self.free_slots = [w.slots for w in self.views]
        self.free_cpu = [w.cpu if w.cpu > 0 else UNLIMITED for w in self.views]
        self.free_memory = [
            float(w.memory_mb) if w.memory_mb > 0 else UNLIMITED for w in self.views
        ]
        self.running_on: list[list[RunningReplica]] = [[] for _ in self.views]
        for replica in running:
            i = self.index.get(replica.worker_id)
            if i is None:
                continue
            self.running_on[i].append(replica)
            self.free_slots[i] -= 1
            self.free_cpu[i] -= replica.resources.cpu
            self.free_memory[i] -= replica.resources.memory_mb
        self.key: list[float | None] = [None] * len(self.views)
        """Each worker's current heap key; None when it has no free slot or is unschedulable."""
        self.class_of: list[int] = [-1] * len(self.views)
        """Index of each schedulable worker's class (-1 for unschedulable ones)."""
        self.classes: list[WorkerClass] = []
        self.free_slot_total = 0
        """Free slots over all schedulable workers: at 0 nothing can be placed."""
        self._count_free_resources = count_free_resources
        """Whether to keep ``free_cpu_total`` and ``free_memory_total`` (only a tier that
        guarantees cpu or memory reads them: the bookkeeping costs every placement)."""
        self.free_cpu_total = FreeTotal()
        self.free_memory_total = FreeTotal()
        self._build_classes()
        self._shapes: dict[object, Shape] = {}
        self._shape_by_id: dict[tuple[str, int], Shape] = {}
        self._eligible: dict[object, list[WorkerClass]] = {}
        self.anti_blocked: dict[LabelSelector, set[int]] = {}
        """Per anti-affinity selector, the workers running a replica whose labels match it."""
        self._anti_sets_for: dict[LabelsKey, list[set[int]]] = {}
        self._anti_sets_by_id: dict[int, list[set[int]]] = {}
        self.spread_used: dict[tuple[str, str], set[object]] = {}
        """Per (workload, spread key), the workers (or label values) holding its replicas."""
        self._spread_keys: dict[str, list[str]] = {}
        self._running = running

    def _build_classes(self) -> None:
        by_identity: dict[tuple[frozenset[tuple[str, str]], frozenset[str]], WorkerClass] = {}
        for i, view in enumerate(self.views):
            if not view.schedulable:
                continue
            identity = (frozenset(view.labels.items()), view.types)
            cls = by_identity.get(identity)
            if cls is None:
                cls = WorkerClass(len(self.classes), view.labels, view.types)
                by_identity[identity] = cls
                self.classes.append(cls)
            cls.members.append(i)
            self.class_of[i] = cls.index
            if self.free_slots[i] > 0:
                self.free_slot_total += self.free_slots[i]
                self._count_free(i, 1)
                key = self._key_of(i)
                self.key[i] = key
                cls.heap.append((key, i))
        for cls in self.classes:
            heapq.heapify(cls.heap)
            cls.top = cls.heap[0] if cls.heap else None

    def _key_of(self, i: int) -> float:
        view = self.views[i]
        used = utilisation(
            self.free_slots[i],
            view.slots,
            self.free_cpu[i],
            view.cpu,
            self.free_memory[i],
            view.memory_mb,
        )
        return used * self._direction

    # -- constraint indexes ------------------------------------------------------------------

    def track(self, pending: Sequence[PendingReplica]) -> None:
        """Index what pending replicas will ask about: anti-affinity selectors and spreads."""
        for replica in pending:
            for selector in replica.affinity.anti:
                self.anti_blocked.setdefault(selector, set())
            spread = replica.affinity.spread
            if spread is not None:
                keys = self._spread_keys.setdefault(replica.key.workload_id, [])
                if spread not in keys:
                    keys.append(spread)
                    self.spread_used[(replica.key.workload_id, spread)] = set()
        for running in self._running:
            i = self.index.get(running.worker_id)
            if i is not None:
                self._occupy(i, running.key.workload_id, running.workload_labels)

    def _occupy(self, i: int, workload_id: str, workload_labels: Mapping[str, str]) -> None:
        if self.anti_blocked:
            sets = self._anti_sets_by_id.get(id(workload_labels))
            for blocked in sets if sets is not None else self._anti_sets(workload_labels):
                blocked.add(i)
        for key in self._spread_keys.get(workload_id, ()):
            value = i if key == SPREAD_BY_WORKER else self.views[i].labels.get(key)
            if value is not None:
                self.spread_used[(workload_id, key)].add(value)

    def _anti_sets(self, workload_labels: Mapping[str, str]) -> list[set[int]]:
        # Replicas of one workload usually share their labels mapping: it is remembered by
        # identity (the input outlives the round, so identities are stable) and by content.
        key = labels_key(workload_labels)
        sets = self._anti_sets_for.get(key)
        if sets is None:
            sets = [b for s, b in self.anti_blocked.items() if s.matches(workload_labels)]
            self._anti_sets_for[key] = sets
        self._anti_sets_by_id[id(workload_labels)] = sets
        return sets

    # -- eligibility -------------------------------------------------------------------------

    def eligible(self, type_name: str, required: tuple[LabelSelector, ...]) -> list[WorkerClass]:
        """Classes that run the type and match every required selector."""
        cache_key = (type_name, required)
        found = self._eligible.get(cache_key)
        if found is None:
            found = [
                c for c in self.classes if type_name in c.types and matches_all(required, c.labels)
            ]
            self._eligible[cache_key] = found
        return found

    def shape_of(self, type_name: str, affinity: Affinity) -> Shape:
        """``shape`` for a replica, looked up by the identity of its affinity first (replicas
        of one workload share it)."""
        key = (type_name, id(affinity))
        shape = self._shape_by_id.get(key)
        if shape is None:
            shape = self.shape(type_name, affinity.required, affinity.preferred)
            self._shape_by_id[key] = shape
        return shape

    def shape(
        self,
        type_name: str,
        required: tuple[LabelSelector, ...],
        preferred: tuple[PreferredSelector, ...],
    ) -> Shape:
        cache_key = (type_name, required, preferred)
        shape = self._shapes.get(cache_key)
        if shape is None:
            by_score: dict[int, list[WorkerClass]] = {}
            for cls in self.eligible(type_name, required):
                by_score.setdefault(soft_affinity(preferred, cls.labels), []).append(cls)
            groups = [CandidateGroup(s, by_score[s]) for s in sorted(by_score, reverse=True)]
            shape = Shape(groups)
            self._shapes[cache_key] = shape
        return shape

    # -- placing -----------------------------------------------------------------------------

    def place(self, i: int, replica: PendingReplica) -> None:
        self.reserve(i, 1, replica.resources.cpu, replica.resources.memory_mb)
        if self.anti_blocked or replica.key.workload_id in self._spread_keys:
            self._occupy(i, replica.key.workload_id, replica.workload_labels)

    def reserve(self, i: int, slots: int, cpu: float, memory: float) -> None:
        """Take capacity on worker ``i`` (a placement, or a preemptor's claim)."""
        if self.free_slots[i] > 0:
            self._count_free(i, -1)
        self.free_slots[i] -= slots
        self.free_cpu[i] -= cpu
        self.free_memory[i] -= memory
        self.free_slot_total -= slots
        cls = self.classes[self.class_of[i]]
        if self.free_slots[i] > 0:
            self._count_free(i, 1)
            key = self._key_of(i)
            self.key[i] = key
            if cls.heap and cls.heap[0][1] == i:  # the usual case: its top entry is now stale
                heapq.heapreplace(cls.heap, (key, i))
            else:
                heapq.heappush(cls.heap, (key, i))
        else:
            self.key[i] = None
        self._refresh_top(cls)

    def _count_free(self, i: int, sign: int) -> None:
        if not self._count_free_resources:
            return
        self.free_cpu_total.add(self.free_cpu[i], sign)
        self.free_memory_total.add(self.free_memory[i], sign)

    def _refresh_top(self, cls: WorkerClass) -> None:
        heap, key = cls.heap, self.key
        while heap and key[heap[0][1]] != heap[0][0]:
            heapq.heappop(heap)
        old, new = cls.top, (heap[0] if heap else None)
        cls.top = new
        # Groups re-key a class lazily when its best worker gets worse; when it gets better
        # (bin-pack fills the best worker further) they must hear at once or bury it.
        if new is not None and (old is None or new < old):
            entry = (new[0], new[1], cls.index)
            for group in cls.groups:
                heapq.heappush(group.heap, entry)
