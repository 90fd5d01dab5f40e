"""``niyanta.batch``: process a list of items, go on past the ones that fail, record them, and
checkpoint the position so that a resumed replica neither repeats nor skips an item."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from niyanta.errors import FencedOut
from niyanta.model import JSON
from niyanta.worker.context import WorkloadContext

Item = TypeVar("Item")

CHECKPOINT_KEY = "niyanta.batch"
"""Where the batch keeps its position inside the replica's checkpoint."""


@dataclass(slots=True)
class BatchResult:
    total: int
    succeeded: int = 0
    failed: list[JSON] = field(default_factory=list)
    """``{"index", "item", "error"}`` per failed item, this run and earlier attempts."""
    results: list[JSON] = field(default_factory=list)
    """What the handler returned for the items processed in this run."""
    stopped: bool = False
    """The replica was asked to stop before the end; the position is checkpointed."""

    def summary(self) -> dict[str, JSON]:
        return {"total": self.total, "succeeded": self.succeeded, "failed": len(self.failed)}


async def batch(
    ctx: WorkloadContext,
    items: Sequence[Item],
    handler: Callable[[Item], Awaitable[JSON]],
    *,
    checkpoint_every: int = 100,
    extra_state: Callable[[], dict[str, JSON]] | None = None,
) -> BatchResult:
    """Run ``handler`` on each item in order.

    A failing item (any exception but a fence refusal or cancellation) is recorded in the
    result and with ``ctx.record_failed_item`` and the batch goes on. Every ``checkpoint_every``
    items the position is checkpointed (under ``"niyanta.batch"``, merged with
    ``extra_state()`` if given) and progress reported. When ``ctx.cancelled`` turns True the
    batch checkpoints and returns with ``stopped=True``.
    """
    if checkpoint_every < 1:
        raise ValueError("checkpoint_every must be at least 1")
    position = _resume_position(ctx.checkpoint)
    outcome = BatchResult(
        total=len(items), succeeded=position["succeeded"], failed=list(position["failed"])
    )
    # Items that failed in earlier attempts stay reported with this attempt's result.
    ctx.failed_items.extend(outcome.failed)
    index = position["next"]
    since_checkpoint = 0
    while index < len(items):
        if ctx.cancelled:
            outcome.stopped = True
            break
        item = items[index]
        try:
            outcome.results.append(await handler(item))
            outcome.succeeded += 1
        except FencedOut:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            outcome.failed.append(ctx.record_failed_item(_jsonable(item), error, index=index))
            ctx.logger.warning("batch item failed", index=index, error=error)
        index += 1
        since_checkpoint += 1
        if since_checkpoint >= checkpoint_every:
            await _checkpoint(ctx, outcome, index, extra_state)
            since_checkpoint = 0
    if since_checkpoint:
        await _checkpoint(ctx, outcome, index, extra_state)
    return outcome


async def _checkpoint(
    ctx: WorkloadContext,
    outcome: BatchResult,
    next_index: int,
    extra_state: Callable[[], dict[str, JSON]] | None,
) -> None:
    state: dict[str, JSON] = dict(extra_state()) if extra_state is not None else {}
    state[CHECKPOINT_KEY] = {
        "next": next_index,
        "succeeded": outcome.succeeded,
        "failed": outcome.failed,
    }
    await ctx.save_checkpoint(state)
    if outcome.total:
        await ctx.report_progress(next_index / outcome.total)


def _resume_position(checkpoint: JSON) -> dict[str, Any]:
    saved = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict):
        return {"next": 0, "succeeded": 0, "failed": []}
    return {
        "next": int(saved.get("next", 0)),
        "succeeded": int(saved.get("succeeded", 0)),
        "failed": list(saved.get("failed", [])),
    }


def _jsonable(item: object) -> JSON:
    if item is None or isinstance(item, str | int | float | bool | list | dict):
        return item
    return repr(item)
