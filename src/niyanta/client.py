"""A typed HTTP client of the coordinator's ``/v1`` API: the one way the CLI (and the demo) talk
to Niyanta.

Each method is one API call and returns the decoded JSON. An API error
(``{"error": {"code", "message"}}``) is raised as the ``niyanta.errors`` class that owns that
code, so callers catch ``UnknownWorkload`` or ``IdempotencyConflict`` exactly as they would in
process. ``base_url`` may list several coordinators, comma-separated: a coordinator that cannot be
connected to is skipped and the next one tried (every coordinator serves the API).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from niyanta.errors import NiyantaError

JSONObject = dict[str, Any]

DEFAULT_COORDINATOR_URL = "http://127.0.0.1:8080"


class CoordinatorUnreachable(NiyantaError):
    """No coordinator in the list accepted a connection."""

    code = "coordinator_unreachable"
    http_status = 503


@dataclass(frozen=True, slots=True)
class SubmitResult:
    workload: JSONObject
    created: bool
    """False when the idempotency key named a workload submitted before."""


@dataclass(frozen=True, slots=True)
class WorkloadPage:
    items: list[JSONObject]
    next_cursor: str | None


def parse_coordinator_urls(urls: str) -> list[str]:
    """Split a comma-separated list of coordinator URLs; raise ValueError when it is empty."""
    parsed = [url.strip().rstrip("/") for url in urls.split(",") if url.strip()]
    if not parsed:
        raise ValueError("no coordinator URL given")
    for url in parsed:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"coordinator URL must start with http:// or https://: {url!r}")
    return parsed


def _error_classes() -> dict[str, type[NiyantaError]]:
    """Every NiyantaError subclass by its code (computed per call: cheap, and sees subclasses
    defined after import)."""
    found: dict[str, type[NiyantaError]] = {}
    pending: list[type[NiyantaError]] = [NiyantaError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_from_response(status: int, body: Any) -> NiyantaError:
    """Rebuild the typed error the coordinator raised from its JSON error body.

    Classes whose constructor takes structured arguments (``FencedOut``, ``IllegalTransition``)
    are rebuilt with the server's message only: the wire carries no more than code and message.
    An unknown code, or a body that is not a Niyanta error at all, becomes a plain NiyantaError
    that still carries the code and the HTTP status.
    """
    code, message = _code_and_message(status, body)
    cls = _error_classes().get(code)
    error: NiyantaError
    if cls is None:
        error = NiyantaError(message)
        error.code = code
    else:
        error = cls.__new__(cls)
        NiyantaError.__init__(error, message)
    error.http_status = status
    return error


def _code_and_message(status: int, body: Any) -> tuple[str, str]:
    if isinstance(body, Mapping):
        detail = body.get("error")
        if isinstance(detail, Mapping) and isinstance(detail.get("code"), str):
            return detail["code"], str(detail.get("message") or detail["code"])
        if "detail" in body:  # a framework-level error that bypassed the API's error handler
            return f"http_{status}", str(body["detail"])
    return f"http_{status}", f"HTTP {status}: {str(body)[:500]}"


def _without_none(fields: Mapping[str, Any]) -> JSONObject:
    return {key: value for key, value in fields.items() if value is not None}


class NiyantaClient:
    """Synchronous client; use as a context manager or call ``close()``."""

    def __init__(
        self,
        base_url: str = DEFAULT_COORDINATOR_URL,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.urls = parse_coordinator_urls(base_url)
        self._preferred = 0
        self._http = httpx.Client(timeout=timeout)

    def __enter__(self) -> NiyantaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def url(self) -> str:
        """The coordinator URL that answered last (or will be tried first)."""
        return self.urls[self._preferred]

    # --- transport ----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Send to the preferred coordinator, then to the others in turn when a connection
        cannot be made. Only connection failures fail over: a request that may have reached a
        coordinator is never sent twice."""
        failures: list[str] = []
        count = len(self.urls)
        for step in range(count):
            index = (self._preferred + step) % count
            url = self.urls[index] + path
            try:
                response = self._http.request(
                    method, url, json=json, params=_without_none(params or {})
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failures.append(f"{self.urls[index]} ({exc or type(exc).__name__})")
                continue
            except httpx.TransportError as exc:
                raise CoordinatorUnreachable(
                    f"no answer from the coordinator at {self.urls[index]}: "
                    f"{exc or type(exc).__name__}"
                ) from exc
            self._preferred = index
            return response
        raise CoordinatorUnreachable(
            "cannot reach the coordinator at " + ", ".join(failures) + "; start one with "
            "`niyanta dev` or point --coordinator / NIYANTA_COORDINATOR at a running one"
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        response = self._request(method, path, json=json, params=params)
        return self._decode(response)

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        body: Any
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        if response.is_error:
            raise error_from_response(response.status_code, body)
        return body

    # --- probes -------------------------------------------------------------------------------

    def health(self) -> JSONObject:
        result: JSONObject = self._call("GET", "/health")
        return result

    def ready(self) -> bool:
        """True when the coordinator answers ``/ready`` with 2xx."""
        return self._request("GET", "/ready").is_success

    def cluster(self) -> JSONObject:
        result: JSONObject = self._call("GET", "/v1/cluster")
        return result

    # --- workload types -----------------------------------------------------------------------

    def register_type(
        self,
        name: str,
        *,
        version: str = "1",
        entrypoint: str | None = None,
        resources: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        checkpoint: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        isolation: str | None = None,
    ) -> JSONObject:
        body = _without_none(
            {
                "name": name,
                "version": version,
                "entrypoint": entrypoint,
                "resources": resources,
                "retry": retry,
                "checkpoint": checkpoint,
                "timeout_s": timeout_s,
                "isolation": isolation,
            }
        )
        result: JSONObject = self._call("POST", "/v1/workload-types", json=body)
        return result

    def list_types(self) -> list[JSONObject]:
        return _items(self._call("GET", "/v1/workload-types"))

    # --- tiers and customers ------------------------------------------------------------------

    def list_tiers(self) -> list[JSONObject]:
        return _items(self._call("GET", "/v1/tiers"))

    def put_tier(self, name: str, config: Mapping[str, Any]) -> JSONObject:
        result: JSONObject = self._call("PUT", f"/v1/tiers/{_seg(name)}", json=dict(config))
        return result

    def create_customer(
        self,
        customer_id: str,
        tier: str,
        *,
        name: str | None = None,
        weight: float | None = None,
        concurrency_cap: int | None = None,
        alert_thresholds: Mapping[str, float] | None = None,
    ) -> JSONObject:
        body = _without_none(
            {
                "id": customer_id,
                "tier": tier,
                "name": name,
                "weight": weight,
                "concurrency_cap": concurrency_cap,
                "alert_thresholds": alert_thresholds,
            }
        )
        result: JSONObject = self._call("POST", "/v1/customers", json=body)
        return result

    def get_customer(self, customer_id: str) -> JSONObject:
        result: JSONObject = self._call("GET", f"/v1/customers/{_seg(customer_id)}")
        return result

    def list_customers(self) -> list[JSONObject]:
        return _items(self._call("GET", "/v1/customers"))

    def update_customer(
        self,
        customer_id: str,
        *,
        tier: str | None = None,
        name: str | None = None,
        weight: float | None = None,
        concurrency_cap: int | None = None,
        alert_thresholds: Mapping[str, float] | None = None,
    ) -> JSONObject:
        body = _without_none(
            {
                "tier": tier,
                "name": name,
                "weight": weight,
                "concurrency_cap": concurrency_cap,
                "alert_thresholds": alert_thresholds,
            }
        )
        result: JSONObject = self._call("PATCH", f"/v1/customers/{_seg(customer_id)}", json=body)
        return result

    # --- workloads ----------------------------------------------------------------------------

    def submit(
        self,
        customer_id: str,
        type_name: str,
        params: Mapping[str, Any] | None = None,
        *,
        type_version: str | None = None,
        mode: str = "batch",
        replicas: int = 1,
        affinity: Mapping[str, Any] | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> SubmitResult:
        body = _without_none(
            {
                "customer_id": customer_id,
                "type": type_name,
                "type_version": type_version,
                "params": dict(params or {}),
                "mode": mode,
                "replicas": replicas,
                "affinity": affinity,
                "priority": priority,
                "idempotency_key": idempotency_key,
                "labels": dict(labels or {}),
            }
        )
        response = self._request("POST", "/v1/workloads", json=body)
        workload: JSONObject = self._decode(response)
        return SubmitResult(workload=workload, created=response.status_code == 201)

    def submit_batch(self, items: Sequence[Mapping[str, Any]]) -> list[JSONObject]:
        """Up to 1,000 submits in one request and one store transaction. Each item is a submit
        body (``customer_id``, ``type``, ``params``, ... and its own ``idempotency_key``). Per
        item, in order: ``{"status": 201|200, "id": ...}`` or ``{"status": 4xx, "error": {"code",
        "message"}}``; a refused item does not stop the others."""
        body = {"items": [_without_none(item) for item in items]}
        return _items(self._call("POST", "/v1/workloads:batch", json=body))

    def get_workload(self, workload_id: str) -> JSONObject:
        result: JSONObject = self._call("GET", f"/v1/workloads/{_seg(workload_id)}")
        return result

    def list_workloads(
        self,
        *,
        customer: str | None = None,
        state: str | None = None,
        type_name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> WorkloadPage:
        params = {
            "customer": customer,
            "state": state,
            "type": type_name,
            "limit": limit,
            "cursor": cursor,
        }
        body = self._call("GET", "/v1/workloads", params=params)
        return WorkloadPage(items=list(body["items"]), next_cursor=body.get("next_cursor"))

    def iter_workloads(
        self,
        *,
        customer: str | None = None,
        state: str | None = None,
        type_name: str | None = None,
        page_size: int = 100,
    ) -> Iterator[JSONObject]:
        """Every matching workload, newest first, following the cursor page by page."""
        cursor: str | None = None
        while True:
            page = self.list_workloads(
                customer=customer,
                state=state,
                type_name=type_name,
                limit=page_size,
                cursor=cursor,
            )
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel_workload(self, workload_id: str) -> JSONObject:
        result: JSONObject = self._call("POST", f"/v1/workloads/{_seg(workload_id)}/cancel")
        return result

    def pause_workload(self, workload_id: str) -> JSONObject:
        result: JSONObject = self._call("POST", f"/v1/workloads/{_seg(workload_id)}/pause")
        return result

    def resume_workload(self, workload_id: str) -> JSONObject:
        result: JSONObject = self._call("POST", f"/v1/workloads/{_seg(workload_id)}/resume")
        return result

    def workload_events(
        self, workload_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[JSONObject]:
        """Its event log, oldest first: events with an id above ``after``, at most ``limit``
        (the coordinator's page size when None)."""
        return _items(
            self._call(
                "GET",
                f"/v1/workloads/{_seg(workload_id)}/events",
                params={"after": after, "limit": limit},
            )
        )

    def iter_events(self, workload_id: str) -> Iterator[JSONObject]:
        """Its whole event log, oldest first, page by page."""
        after = 0
        while page := self.workload_events(workload_id, after=after):
            yield from page
            after = int(page[-1]["id"])

    def latest_checkpoint(self, workload_id: str, replica: int = 0) -> JSONObject:
        result: JSONObject = self._call(
            "GET", f"/v1/workloads/{_seg(workload_id)}/checkpoint", params={"replica": replica}
        )
        return result

    # --- autoscaling policies -----------------------------------------------------------------

    def list_autoscale_policies(self) -> list[JSONObject]:
        return _items(self._call("GET", "/v1/autoscale"))

    def get_autoscale_policy(self, customer_id: str, type_name: str) -> JSONObject:
        result: JSONObject = self._call(
            "GET", f"/v1/autoscale/{_seg(customer_id)}/{_seg(type_name)}"
        )
        return result

    def put_autoscale_policy(
        self, customer_id: str, type_name: str, policy: Mapping[str, Any]
    ) -> JSONObject:
        result: JSONObject = self._call(
            "PUT", f"/v1/autoscale/{_seg(customer_id)}/{_seg(type_name)}", json=dict(policy)
        )
        return result

    def delete_autoscale_policy(self, customer_id: str, type_name: str) -> None:
        self._call("DELETE", f"/v1/autoscale/{_seg(customer_id)}/{_seg(type_name)}")

    # --- workers ------------------------------------------------------------------------------

    def list_workers(self) -> list[JSONObject]:
        return _items(self._call("GET", "/v1/workers"))

    def drain_worker(self, worker_id: str) -> JSONObject:
        result: JSONObject = self._call("POST", f"/v1/workers/{_seg(worker_id)}/drain")
        return result


def _seg(value: str) -> str:
    """One URL path segment: an id with a slash or a space must not change the route."""
    return quote(value, safe="")


def _items(body: Any) -> list[JSONObject]:
    """The list of a listing response (``{"items": [...]}``)."""
    return list(body["items"])
