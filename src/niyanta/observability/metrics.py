"""Prometheus metrics of a coordinator, in a registry of its own.

One registry per ``CoordinatorMetrics`` (not the process-global default) so that several
coordinators in one process (tests, ``niyanta dev``) never share or clash.

Cardinality is bounded by construction: labels are customer, workload type, tier, error class,
reason, pool and state — never a workload, replica or worker id. Operators with very many
customers can cap it with ``max_customers`` (customers past the cap are reported as ``_other``).

Workers have no metrics endpoint of their own: what the coordinator must know of them (capacity,
slots in use, circuit breakers) arrives in their heartbeats and is exported here, aggregated by
pool (see docs/observability.md for why).

``enabled=False`` (``NIYANTA_COORDINATOR_METRICS=off``) makes every metric an inert stand-in:
nothing is counted and ``/metrics`` is empty (the observability benchmark's baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST

WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
ROUND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)

OTHER_CUSTOMER = "_other"
DEFAULT_POOL = "default"
"""The ``pool`` label of workers without a ``pool`` label."""
BREAKER_PREFIX = "breaker."
"""Heartbeat metric keys ``breaker.<type>.<dependency>`` (the worker's ``BreakerBoard``)."""

M = TypeVar("M")


class QueueKey(NamedTuple):
    customer: str
    tier: str


class WorkerSample(NamedTuple):
    """What the metrics need of one connected worker (from the worker registry)."""

    pool: str
    state: str
    slots: int
    free_slots: int
    reported: Mapping[str, float]


class _Inert:
    """Stands in for every metric while metrics are off: accepts every call, records nothing."""

    def labels(self, *_args: Any, **_kwargs: Any) -> _Inert:
        return self

    def inc(self, *_args: Any) -> None:
        pass

    def set(self, *_args: Any) -> None:
        pass

    def observe(self, *_args: Any) -> None:
        pass

    def clear(self) -> None:
        pass

    def remove(self, *_args: Any) -> None:
        pass


_INERT = _Inert()


class CoordinatorMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_customers: int = 10_000, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=True)
        self._max_customers = max_customers
        self._customers: set[str] = set()
        self._before_scrape: list[Callable[[], None]] = []
        r = self.registry

        def made(metric: Callable[..., M]) -> Callable[..., M]:
            return metric if enabled else cast(Callable[..., M], lambda *_a, **_k: _INERT)

        Counter, Gauge, Histogram = made(_Counter), made(_Gauge), made(_Histogram)
        ct = ["customer", "type"]
        self.submitted = Counter(
            "niyanta_workloads_submitted", "Workloads accepted by the API.", ct, registry=r
        )
        self.started = Counter(
            "niyanta_replicas_started", "Replica attempts started on a worker.", ct, registry=r
        )
        self.succeeded = Counter(
            "niyanta_replicas_succeeded", "Replicas that completed successfully.", ct, registry=r
        )
        self.failed = Counter(
            "niyanta_replicas_failed",
            "Replica attempts that failed, by error class.",
            [*ct, "error_class"],
            registry=r,
        )
        self.retried = Counter(
            "niyanta_replicas_retried", "Failed attempts scheduled for a retry.", ct, registry=r
        )
        self.cancelled = Counter(
            "niyanta_workloads_cancelled", "Workloads cancelled through the API.", ct, registry=r
        )
        self.resumed = Counter(
            "niyanta_replicas_resumed_from_checkpoint",
            "Replica attempts started from a checkpoint rather than from the beginning.",
            ct,
            registry=r,
        )
        self.preempted = Counter(
            "niyanta_replicas_preempted",
            "Replicas asked to yield to a higher tier.",
            ct,
            registry=r,
        )
        self.queue_wait = Histogram(
            "niyanta_queue_wait_seconds",
            "Time from pending to started on a worker.",
            ct,
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            "niyanta_run_seconds",
            "Time from start to a final result of one attempt.",
            ct,
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "niyanta_queue_depth", "Pending replicas.", ["customer", "tier"], registry=r
        )
        self.queue_oldest_age = Gauge(
            "niyanta_queue_oldest_age_seconds",
            "Age of the oldest pending replica.",
            ["customer", "tier"],
            registry=r,
        )
        self.worker_slots = Gauge(
            "niyanta_worker_slots", "Slots of connected workers, by pool.", ["pool"], registry=r
        )
        self.worker_slots_used = Gauge(
            "niyanta_worker_slots_used", "Slots in use on connected workers.", ["pool"], registry=r
        )
        self.worker_utilization = Gauge(
            "niyanta_worker_utilization_ratio",
            "Used over total slots of connected workers.",
            ["pool"],
            registry=r,
        )
        self.workers = Gauge(
            "niyanta_workers", "Connected workers by pool and state.", ["pool", "state"], registry=r
        )
        self.workers_lost = Counter(
            "niyanta_workers_lost",
            "Workers gone without a goodbye (connection dropped or heartbeats stopped).",
            registry=r,
        )
        self.lease_expiries = Counter(
            "niyanta_lease_expiries", "Leases that expired (missed heartbeats).", registry=r
        )
        self.reassignments = Counter(
            "niyanta_reassignments",
            "Replicas handed back for placement elsewhere, by reason.",
            ["reason"],
            registry=r,
        )
        self.fenced_writes = Counter(
            "niyanta_fenced_writes",
            "Writes refused because their fence token was stale, by kind.",
            ["kind"],
            registry=r,
        )
        self.checkpoint_writes = Counter(
            "niyanta_checkpoint_writes", "Checkpoints committed.", ct, registry=r
        )
        self.checkpoint_bytes = Counter(
            "niyanta_checkpoint_bytes", "Bytes of checkpoints committed.", ct, registry=r
        )
        self.circuit_state = Gauge(
            "niyanta_circuit_breaker_state",
            "Worst state of a type's dependency breaker over the workers "
            "(0 closed, 1 half-open, 2 open).",
            ["type", "dependency"],
            registry=r,
        )
        self.leader_changes = Counter(
            "niyanta_leader_changes", "Times this coordinator gained leadership.", registry=r
        )
        self.leader_term = Gauge(
            "niyanta_leader_term",
            "Term of the leadership this coordinator holds (0: follower).",
            registry=r,
        )
        self.is_leader = Gauge("niyanta_is_leader", "1 while this coordinator leads.", registry=r)
        self.scheduler_round = Histogram(
            "niyanta_scheduler_round_seconds",
            "Duration of one scheduling round (pure placement only).",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.slo_alert = Gauge(
            "niyanta_slo_alert_active",
            "1 while a customer's SLO is breached.",
            ["customer", "slo"],
            registry=r,
        )

        self.fleet_desired_workers = Gauge(
            "niyanta_fleet_desired_workers",
            "Workers each pool should run for its running and pending replicas (for HPA/KEDA).",
            ["pool"],
            registry=r,
        )

    def customer_label(self, customer: str) -> str:
        """The customer label to use, bounded by ``max_customers``."""
        if customer in self._customers:
            return customer
        if len(self._customers) >= self._max_customers:
            return OTHER_CUSTOMER
        self._customers.add(customer)
        return customer

    def before_scrape(self, refresh: Callable[[], None]) -> None:
        """Call ``refresh`` before each rendering (gauges read from live state)."""
        self._before_scrape.append(refresh)

    def observe_queue(
        self, depth: Mapping[QueueKey, int], oldest: Mapping[QueueKey, float]
    ) -> None:
        """Replace the queue gauges: a customer whose queue emptied drops out."""
        self.queue_depth.clear()
        self.queue_oldest_age.clear()
        for key, count in depth.items():
            self.queue_depth.labels(*key).set(count)
            self.queue_oldest_age.labels(*key).set(oldest.get(key, 0.0))

    def observe_workers(self, workers: Iterable[WorkerSample]) -> None:
        """Replace the worker gauges (capacity, use, states per pool; breaker states)."""
        slots: dict[str, int] = {}
        used: dict[str, int] = {}
        states: dict[tuple[str, str], int] = {}
        breakers: dict[tuple[str, str], float] = {}
        for w in workers:
            slots[w.pool] = slots.get(w.pool, 0) + w.slots
            used[w.pool] = used.get(w.pool, 0) + max(0, w.slots - w.free_slots)
            states[(w.pool, w.state)] = states.get((w.pool, w.state), 0) + 1
            for key, value in w.reported.items():
                type_name, _, dependency = key.removeprefix(BREAKER_PREFIX).partition(".")
                if key.startswith(BREAKER_PREFIX) and dependency:
                    pair = (type_name, dependency)
                    breakers[pair] = max(breakers.get(pair, 0.0), value)
        for gauge in (self.worker_slots, self.worker_slots_used, self.worker_utilization):
            gauge.clear()
        self.workers.clear()
        self.circuit_state.clear()
        for pool, total in slots.items():
            self.worker_slots.labels(pool).set(total)
            self.worker_slots_used.labels(pool).set(used[pool])
            self.worker_utilization.labels(pool).set(used[pool] / total if total else 0.0)
        for (pool, state), count in states.items():
            self.workers.labels(pool, state).set(count)
        for (type_name, dependency), value in breakers.items():
            self.circuit_state.labels(type_name, dependency).set(value)

    def render(self) -> bytes:
        if not self.enabled:
            return b""
        for refresh in self._before_scrape:
            refresh()
        return generate_latest(self.registry)
