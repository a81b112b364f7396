"""Moving due work from the queue to the stream.

Every worker runs this loop, over every shard it reads (a queue per shard); the move is
one Lua script per shard, so two workers never move the
same task twice. The due keys are read first (a script declares every key it touches,
which a cluster requires), and the script moves those still due. The loop sleeps until
the next task is due, but never longer than the scheduling resolution, so that work added
meanwhile for an earlier moment is not late by more than that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shadows.core.backend import Backend
from shadows.core.cancellation import CancelGuard
from shadows.core.execution import now_ms
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff, sleep_unless

logger = logging.getLogger("shadows.worker")

#: Tasks moved by one script call at most (the loop goes again at once when full).
PAGE = 1000


async def run_scheduler(
    shards: Callable[[], list[Backend]],
    resolution: float,
    reconnect_cap: float,
    stopping: asyncio.Event,
    wake: asyncio.Event,
) -> None:
    """Move due work of every shard (``shards()``: the shadow with each shard's keys)
    until ``stopping``; ``wake`` cuts a sleep short (this worker has just parked work
    that may be due sooner than the loop planned to look)."""
    backoff = Backoff(reconnect_cap)
    guard = CancelGuard()
    while not stopping.is_set():
        guard.check()
        full = False
        wait = resolution
        try:
            for shard in shards():
                now = now_ms()
                moved, next_due = await move_due(shard, now)
                full = full or int(moved) >= PAGE
                due = float(next_due)
                if due >= 0:
                    wait = min(wait, max(0.0, (due - now_ms()) / 1000))
        except CONNECTION_ERRORS as error:
            logger.debug("Scheduler paused: %s", error)
            await sleep_unless(stopping, backoff.next())
            continue
        except Exception as error:  # the loop must outlive any one error
            # Not an outage by our list, yet possible around one on a cluster: the promoted
            # replica has no scripts (Redis does not replicate SCRIPT LOAD: NoScriptError
            # if redis-py's reload misses it), redis-py gives up redirecting (ClusterError,
            # RedisClusterException). This background loop used to end on such an error
            # without a word (its task is only gathered when the worker stops): due work
            # was never moved again while everything else ran on. Say so and go on.
            first = not backoff.failing
            delay = backoff.next()
            logger.warning(
                "Cannot move due work (%r); retrying in %.1f s", error, delay, exc_info=first
            )
            await sleep_unless(stopping, delay)
            continue
        backoff.reset()
        if full:
            continue
        await _sleep(stopping, wake, wait)
        wake.clear()


async def move_due(shadow: Backend, now: int) -> tuple[int, float]:
    """Move up to a page of due work; ``(candidates, score of the next future task or
    -1)``."""
    keys = shadow.keys
    async with shadow.client.pipeline(transaction=False) as pipe:
        pipe.zrange(keys.queue, "-inf", now, byscore=True, offset=0, num=PAGE)
        pipe.zrange(keys.queue, 0, 0, withscores=True)
        due, first = await pipe.execute()
    if not due:
        return 0, float(first[0][1]) if first else -1.0
    script_keys = [keys.queue, keys.stream]
    for raw in due:
        key = raw.decode() if isinstance(raw, bytes) else raw
        script_keys += [keys.run(key), keys.parked(key)]
    _, next_due = await shadow.scripts.move_due(keys=script_keys, args=[now, *due])
    return len(due), float(next_due)


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
