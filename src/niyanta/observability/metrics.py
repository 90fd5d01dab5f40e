"""Prometheus metrics of a coordinator, in a registry of its own.

One registry per ``CoordinatorMetrics`` (not the process-global default) so that several
coordinators in one process (tests, ``niyanta dev``) never share or clash.

Cardinality is bounded by construction: labels are customer, workload type, tier, error class,
reason and state — never a workload, replica or worker id. Operators with very many customers can
cap it with ``max_customers`` (customers past the cap are reported as ``_other``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
ROUND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)

OTHER_CUSTOMER = "_other"


class CoordinatorMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_customers: int = 10_000) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._max_customers = max_customers
        self._customers: set[str] = set()
        r = self.registry
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
            "niyanta_worker_slots", "Slots of connected, schedulable workers.", registry=r
        )
        self.worker_slots_used = Gauge(
            "niyanta_worker_slots_used", "Slots in use on connected workers.", registry=r
        )
        self.worker_utilization = Gauge(
            "niyanta_worker_utilization_ratio", "Used over total worker slots.", registry=r
        )
        self.workers = Gauge("niyanta_workers", "Workers by state.", ["state"], registry=r)
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
        self.circuit_open = Gauge(
            "niyanta_circuit_breaker_open",
            "1 while a circuit breaker of a type and dependency is open on any worker.",
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
