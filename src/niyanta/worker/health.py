"""The worker's probe port for Kubernetes: ``GET /health`` (the process answers) and ``GET /ready``
(joined to a coordinator over a live connection), as JSON.

A few lines of asyncio rather than a second ASGI server: the worker serves nothing else over
HTTP, and two fixed answers need no routing, parsing or lifespan. It runs on the worker's event
loop, so a loop blocked by workload code fails the probe too, as it should. Off unless
``--health-port`` (``NIYANTA_WORKER_HEALTH_PORT``) is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import structlog

log = structlog.get_logger("niyanta.worker")

READ_TIMEOUT_S = 5.0
MAX_HEADER_LINES = 100


class HealthServer:
    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self._host = host
        self._port = port
        self._ready = ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one picked for port 0)."""
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("health.listening", host=self._host, port=self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
            for _ in range(MAX_HEADER_LINES):  # the headers: read, not needed
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
                if line in (b"\r\n", b"\n", b""):
                    break
            status, body = self._answer(request.decode("latin-1").split())
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, request_line: list[str]) -> tuple[str, dict[str, object]]:
        if len(request_line) < 2 or request_line[0] not in ("GET", "HEAD"):
            return "405 Method Not Allowed", {"code": "method_not_allowed"}
        path = request_line[1].split("?", 1)[0]
        if path == "/health":
            return "200 OK", {"status": "ok"}
        if path == "/ready":
            if self._ready():
                return "200 OK", {"ready": True}
            return "503 Service Unavailable", {"ready": False, "code": "not_ready"}
        return "404 Not Found", {"code": "not_found"}
