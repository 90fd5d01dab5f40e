"""Fetch every page of a paginated HTTP API, following its cursor.

Checkpoint: ``{"cursor": <next page's cursor or null>, "pages": n, "items": n, "sum": n}`` after
every page, so a resumed replica continues with the page after the last one it counted and the
totals stay exact. A 5xx, a 429 or a connection error raises ``TransientError`` (the attempt is
retried with backoff and resumes at the failed page); any other 4xx raises ``PermanentError``.
Calls go through the ``page-server`` circuit breaker, so a server that keeps failing holds the
replicas of this type back instead of burning their retries.

``PageServer`` is a small local API to run it against (``python -m examples.paginated_fetch``
serves one until interrupted): ``GET /items?cursor=C&limit=L`` answers ``{"items": [{"id",
"value"}], "next_cursor"}``; each cursor in ``fail_cursors`` answers 503 the first time.

Params: ``base_url``, ``page_size`` (default 50).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from niyanta import PermanentError, TransientError, WorkloadContext, workload


@workload("paginated-fetch", resources={"cpu": 0.2, "memory_mb": 64}, timeout_s=600)
async def fetch_all(ctx: WorkloadContext) -> dict[str, int]:
    base_url = str(ctx.params["base_url"]).rstrip("/")
    page_size = int(ctx.params.get("page_size", 50))
    state: dict[str, Any] = ctx.checkpoint or {"cursor": 0, "pages": 0, "items": 0, "sum": 0}
    async with httpx.AsyncClient(timeout=10.0) as client:
        while state["cursor"] is not None and not ctx.cancelled:
            async with ctx.dependency("page-server"):
                page = await _get_page(client, base_url, state["cursor"], page_size)
            items = page["items"]
            state = {
                "cursor": page["next_cursor"],
                "pages": state["pages"] + 1,
                "items": state["items"] + len(items),
                "sum": state["sum"] + sum(int(item["value"]) for item in items),
            }
            await ctx.save_checkpoint(state)
            await ctx.report_metric("pages_fetched", state["pages"])
    return {"pages": state["pages"], "items": state["items"], "sum": state["sum"]}


async def _get_page(
    client: httpx.AsyncClient, base_url: str, cursor: int, limit: int
) -> dict[str, Any]:
    try:
        response = await client.get(f"{base_url}/items", params={"cursor": cursor, "limit": limit})
    except httpx.TransportError as exc:
        raise TransientError(f"cannot reach {base_url}: {exc}") from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientError(f"page {cursor}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise PermanentError(f"page {cursor}: HTTP {response.status_code}: {response.text}")
    page: dict[str, Any] = response.json()
    return page


class PageServer:
    """A local paginated API over ``total`` items (item i has value i*i), in a thread."""

    def __init__(
        self, total: int = 500, fail_cursors: Iterable[int] = (), host: str = "127.0.0.1"
    ) -> None:
        self.total = total
        self.requests = 0
        self._fail_once = set(fail_cursors)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> PageServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> PageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, cursor: int, limit: int) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests += 1
            if cursor in self._fail_once:
                self._fail_once.discard(cursor)
                return 503, {"error": "try again"}
        end = min(self.total, cursor + limit)
        items = [{"id": i, "value": i * i} for i in range(cursor, end)]
        return 200, {"items": items, "next_cursor": end if end < self.total else None}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path != "/items":
                    status, body = 404, {"error": "not found"}
                else:
                    try:
                        cursor = int(query.get("cursor", ["0"])[0])
                        limit = int(query.get("limit", ["50"])[0])
                    except ValueError:
                        status, body = 400, {"error": "cursor and limit must be integers"}
                    else:
                        status, body = server.answer(cursor, limit)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests and the demo start this server often

        return Handler


if __name__ == "__main__":
    with PageServer() as running:
        print(f"serving {running.total} items at {running.url}/items", flush=True)
        threading.Event().wait()
