"""The leader's per-customer SLO watch.

It tails the event log (so that every coordinator's writes count and a new leader rebuilds the
same view from the store), turns finished attempts into samples, evaluates each customer's SLOs
over the sliding window with the pure ``evaluate_slos``, and for each alert raised or resolved:
records an ``slo.alert`` / ``slo.resolved`` event, sets ``niyanta_slo_alert_active`` and queues a
webhook POST. Which alerts are active is read back from those events when leadership is gained.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace

import structlog

from niyanta.clock import Clock
from niyanta.coordinator.alert_webhook import AlertWebhook
from niyanta.coordinator.catalog import Catalog
from niyanta.coordinator.stopper import Stopper
from niyanta.model import JSON, Event
from niyanta.observability.metrics import CoordinatorMetrics
from niyanta.slo.attempts import AttemptTracker
from niyanta.slo.evaluator import AlertChange, AlertState, AttemptSample, SloWindow, evaluate_slos
from niyanta.store.base import EventQuery, Store

log = structlog.get_logger("niyanta.coordinator")

ACTOR = "slo-watch"
ALERT_KIND = {AlertState.RAISED: "slo.alert", AlertState.RESOLVED: "slo.resolved"}
PAGE = 1000
ERROR_PAUSE_S = 1.0
TRACK_HORIZON_S = 24 * 3600.0
"""A replica queued longer than this before it starts gives no queue-wait sample."""


class SloWatch:
    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        metrics: CoordinatorMetrics,
        clock: Clock,
        window: SloWindow,
        interval_s: float,
        webhook: AlertWebhook | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._metrics = metrics
        self._clock = clock
        self._window = window
        self._interval_s = interval_s
        self._webhook = webhook
        self._tracker = AttemptTracker()
        self._samples: deque[AttemptSample] = deque()
        self._active: set[tuple[str, str]] = set()
        self._cursor = 0
        self._recovered = False

    @property
    def active(self) -> frozenset[tuple[str, str]]:
        """(customer, measure) pairs alerting now."""
        return frozenset(self._active)

    async def run(self, stopper: Stopper) -> None:
        self._recovered = False
        await stopper.repeat(
            self._step,
            interval_s=self._interval_s,
            error_pause_s=ERROR_PAUSE_S,
            failure_event="slo.watch_failed",
        )

    async def _step(self) -> None:
        if not self._recovered:  # once per term, retried until the store answers
            await self.recover()
            self._recovered = True
        await self.tick()

    async def recover(self) -> None:
        """Rebuild the window and the active alerts from the store (on gaining leadership)."""
        self._tracker = AttemptTracker()
        self._samples.clear()
        self._active.clear()
        self._cursor = 0
        async for event in self._events(EventQuery(kind_prefix="slo.")):
            pair = (event.customer_id or "", str(event.data.get("slo", "")))
            if event.kind == ALERT_KIND[AlertState.RAISED]:
                self._active.add(pair)
            else:
                self._active.discard(pair)
        for customer, measure in self._active:
            self._gauge(customer, measure, True)

    async def tick(self) -> list[AlertChange]:
        now = self._clock.now()
        # Attempts finishing in the window may have started up to a window earlier; after a
        # recovery this reads them back, later only what is new since the cursor.
        since = now - 2 * self._window.window_s
        query = EventQuery(after_id=self._cursor, since=since, with_data=False)
        async for event in self._events(query):
            self._fold(event)
        while self._samples and now - self._samples[0].finished_at > self._window.window_s:
            self._samples.popleft()
        self._tracker.prune(now - TRACK_HORIZON_S)
        tenancy = await self._catalog.tenancy()
        changes = evaluate_slos(
            self._samples,
            tenancy.customers,
            tenancy.tiers,
            frozenset(self._active),
            now,
            self._window,
        )
        for change in changes:
            tier = tenancy.customers[change.customer_id].tier
            await self._record(change, tier, now)
        return changes

    def _fold(self, event: Event) -> None:
        self._cursor = max(self._cursor, event.id)
        sample = self._tracker.fold(event)
        if sample is not None:
            self._samples.append(sample)

    async def _events(self, query: EventQuery) -> AsyncIterator[Event]:
        """Every event ``query`` matches, in id order, a page at a time."""
        after = query.after_id
        while True:
            page = await self._store.list_events(replace(query, after_id=after, limit=PAGE))
            for event in page:
                yield event
            if len(page) < PAGE:
                return
            after = page[-1].id

    async def _record(self, change: AlertChange, tier: str, now: float) -> None:
        kind = ALERT_KIND[change.state]
        pair = (change.customer_id, change.measure)
        comparison = ">" if change.state is AlertState.RAISED else "<"
        event = await self._store.append_event(
            Event(
                id=0,
                kind=kind,
                at=now,
                actor=ACTOR,
                customer_id=change.customer_id,
                reason=f"{change.measure} {change.value:g} {comparison} {change.threshold:g}",
                data={
                    "slo": change.measure,
                    "value": change.value,
                    "threshold": change.threshold,
                    "tier": tier,
                },
            )
        )
        raised = change.state is AlertState.RAISED
        if raised:
            self._active.add(pair)
        else:
            self._active.discard(pair)
        self._gauge(change.customer_id, change.measure, raised)
        log.warning(kind, customer=change.customer_id, reason=event.reason, tier=tier)
        if self._webhook is not None:
            body: dict[str, JSON] = {
                "kind": kind,
                "event_id": event.id,
                "at": event.at,
                "customer": change.customer_id,
                **event.data,
            }
            self._webhook.notify(body)

    def _gauge(self, customer: str, measure: str, raised: bool) -> None:
        label = self._metrics.customer_label(customer)
        self._metrics.slo_alert.labels(customer=label, slo=measure).set(1 if raised else 0)
