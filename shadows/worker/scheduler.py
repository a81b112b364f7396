"""Moving due work from the queue to the stream.

Every worker runs this loop; the move is one Lua script, so two workers never move the
same task twice. The loop sleeps until the next task is due, but never longer than the
scheduling resolution, so that work added meanwhile for an earlier moment is not late by
more than that.
"""

from __future__ import annotations

import asyncio
import logging

from shadows.core.cancellation import CancelGuard
from shadows.core.execution import now_ms
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff, sleep_unless
from shadows.producer.shadow import Shadow

logger = logging.getLogger("shadows.worker")

#: Tasks moved by one script call at most (the loop goes again at once when full).
PAGE = 1000


async def run_scheduler(
    shadow: Shadow,
    resolution: float,
    reconnect_cap: float,
    stopping: asyncio.Event,
    wake: asyncio.Event,
) -> None:
    """Move due work until ``stopping``; ``wake`` cuts a sleep short (this worker has just
    parked work that may be due sooner than the loop planned to look)."""
    keys = shadow.keys
    backoff = Backoff(reconnect_cap)
    guard = CancelGuard()
    while not stopping.is_set():
        guard.check()
        try:
            now = now_ms()
            moved, next_due = await shadow.scripts.move_due(
                keys=[keys.queue, keys.stream], args=[now, PAGE, keys.prefix]
            )
        except CONNECTION_ERRORS as error:
            logger.debug("Scheduler paused: %s", error)
            await sleep_unless(stopping, backoff.next())
            continue
        backoff.reset()
        if int(moved) >= PAGE:
            continue
        wait = resolution
        due = float(next_due)
        if due >= 0:
            wait = min(wait, max(0.0, (due - now_ms()) / 1000))
        await _sleep(stopping, wake, wait)
        wake.clear()


async def _sleep(stopping: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when stopping or woken."""
    if seconds <= 0 or wake.is_set() or stopping.is_set():
        return
    waiters = {asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
