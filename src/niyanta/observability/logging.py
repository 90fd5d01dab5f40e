"""structlog configuration: JSON lines on stderr (console rendering on a terminal or on request).

Context that concerns a workload (customer, workload, replica, worker, fence, attempt, trace_id)
is bound through contextvars (``bind_workload_context``) so that every line written while
handling it carries those keys, including lines written by workload code through ``ctx.logger``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal

import msgspec
import structlog

from niyanta.observability.tracing import add_trace_ids

LogFormat = Literal["json", "console", "auto"]

_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}

# A value msgspec cannot encode (any object, a key that is not a string) is written as its repr,
# as structlog's own JSON renderer does.
_json_encoder = msgspec.json.Encoder(enc_hook=repr)


def json_line(event_dict: Mapping[str, Any], **_dumps_kw: Any) -> str:
    """structlog's JSON serializer: msgspec, which makes a whole line about a fifth cheaper
    than the standard library's json does (logging is a sizeable share of the coordinator's CPU
    at INFO; ``bench/observability.py --logging-only``). What msgspec refuses (a string with
    a lone surrogate, from an undecodable file name) goes through the standard library, which
    escapes it."""
    try:
        return _json_encoder.encode(event_dict).decode()
    except (TypeError, ValueError):
        return json.dumps(event_dict, default=repr)


class UtcTimestamp:
    """structlog processor: ``timestamp``, ISO 8601 in UTC with microseconds, as
    ``TimeStamper(fmt="iso", utc=True)`` writes it, at under half its cost (which was a sixth
    of a line's): the date and time to the second are formatted once a second."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")
        """The last second formatted and its text (one tuple: threads swap it whole)."""

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        cached, text = self._second
        if cached != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        event_dict["timestamp"] = f"{text}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


def configure_logging(level: str | None = None, fmt: LogFormat = "auto") -> None:
    """Configure structlog and stdlib logging once per process.

    ``level`` defaults to ``NIYANTA_LOG_LEVEL`` or INFO; ``fmt="auto"`` renders for humans when
    stderr is a terminal and JSON otherwise.
    """
    name = (level or os.environ.get("NIYANTA_LOG_LEVEL") or "INFO").upper()
    if name not in _LEVELS:
        raise ValueError(f"unknown log level {name!r}; use one of {sorted(_LEVELS)}")
    numeric = logging.getLevelName(name)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(serializer=json_line)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        UtcTimestamp(),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (PrintLogger writes the newline apart): a worker and its isolated
        # children share stderr, and their lines must not interleave.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Lines of libraries that log through the standard library (uvicorn, asyncio) are rendered
    # the same way, so that stderr is one JSON object a line throughout.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    # uvicorn's access log is one line per request: too loud for a job system at INFO.
    logging.getLogger("uvicorn.access").setLevel(max(numeric, logging.WARNING))
    # At DEBUG the WebSocket library dumps every frame (binary broker messages): not for humans.
    logging.getLogger("websockets").setLevel(max(numeric, logging.INFO))


@contextmanager
def bind_workload_context(**values: object) -> Iterator[None]:
    """Bind workload keys for the duration of a block (asyncio-task local)."""
    present = {k: v for k, v in values.items() if v is not None}
    with structlog.contextvars.bound_contextvars(**present):
        yield
