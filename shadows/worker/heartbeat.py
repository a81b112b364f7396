"""A worker's heartbeat: keeping its entry in the registry alive while it runs.

The loop beats at once, then every interval, through Redis outages (the entry may lapse
during a long one and comes back with the next beat). It keeps going while the worker
drains its running tasks after a stop signal, because the worker is still there; only when
the worker is done does :meth:`Heartbeat.stop` remove the entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from shadows.core.cancellation import CancelGuard
from shadows.core.execution import now_ms
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff, sleep_unless
from shadows.operations.registry import Presence, beat, leave
from shadows.producer.shadow import Shadow

logger = logging.getLogger("shadows.worker")


class Heartbeat:
    """Announces one worker every ``interval`` seconds until stopped; each announcement
    lasts the shadow's ``missed_heartbeats`` intervals."""

    def __init__(
        self,
        shadow: Shadow,
        interval: float,
        reconnect_cap: float,
        presence: Callable[[], Presence],
    ) -> None:
        self.shadow = shadow
        self.interval = interval
        self.window_ms = max(1, int(interval * shadow.missed_heartbeats * 1000))
        self.reconnect_cap = reconnect_cap
        self._presence = presence
        self._halt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, name: str) -> None:
        self._halt.clear()
        self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        """Stop beating and leave the registry (best effort: else the entry expires)."""
        self._halt.set()
        task, self._task = self._task, None
        if task is None:
            return
        # A beat stuck on an unreachable Redis must not hold up the worker's exit.
        grace = max(self.interval, 1.0)
        await asyncio.wait({task}, timeout=grace)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        name = self._presence().name
        try:
            await asyncio.wait_for(leave(self.shadow, name), grace)
        except Exception as error:  # unreachable, timed out, refused: all the same here
            logger.info("Could not leave the worker registry (%s); the entry will expire", error)

    async def _run(self) -> None:
        backoff = Backoff(self.reconnect_cap)
        failing = False
        guard = CancelGuard()
        while not self._halt.is_set():
            guard.check()
            wait = self.interval
            try:
                await beat(self.shadow, self._presence(), self.window_ms, now_ms())
                backoff.reset()
                failing = False
            except CONNECTION_ERRORS as error:
                # The read loop already warns about outages; retry sooner than usual so
                # the entry is back quickly once Redis is.
                logger.debug("Heartbeat failed: %s", error)
                wait = min(backoff.next(), self.interval)
            except Exception as error:
                if not failing:
                    logger.warning("Heartbeat failed: %s: %s", type(error).__name__, error)
                failing = True
            await sleep_unless(self._halt, wait)
