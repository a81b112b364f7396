"""The worker's background loops (the scheduler, lease renewal, continuity, the strike
follower) run until the worker stops, and are only awaited then: one that ended early on
an error nobody expected would go unnoticed until the stop, while the work it does (due
tasks moved, claims renewed) quietly stopped. Such an end is logged at once."""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger("shadows.worker")


def watched(*tasks: asyncio.Task[None]) -> list[asyncio.Task[None]]:
    """``tasks``, whose end on an error is logged when it happens."""
    for task in tasks:
        task.add_done_callback(_ended)
    return list(tasks)


def _ended(task: asyncio.Task[None]) -> None:
    if task.cancelled() or task.exception() is None:
        return
    error = task.exception()
    logger.error(
        "Internal: the worker's loop %s ended on %s: %s; what it does has stopped until the "
        "worker restarts",
        task.get_name(),
        type(error).__name__,
        error,
        exc_info=error,
    )
