"""A worker's heartbeat: keeping its entry in the registry alive while it runs, and
fencing its tasks when it cannot.

The entry lasts ``missed_heartbeats`` intervals on the server's clock; once it is gone,
other workers take the worker's messages at once (:mod:`shadows.takeover`). So a worker
whose beats have not been confirmed for 70% of that window (Redis unreachable from here,
the process stopped, its event loop blocked by a task) cancels its running tasks before
anyone may take them, and reads nothing until a beat goes through again. The check is a
plain timer callback, so after a SIGSTOP or a long pause it runs before the tasks' own
timers resume them.

Each run of a worker has an instance token: a name held by a live instance (its entry
carries another token) is refused at start, after waiting up to one window in case that
instance is dead and its entry merely has not expired yet. An instance that finds its
name taken by another while running (it came back after its entry lapsed) stops.

The loop beats at once, then every interval, through Redis outages. It keeps going while
the worker drains its running tasks after a stop signal; only when the worker is done
does :meth:`Heartbeat.stop` remove the entry (its own, never a successor's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable

from shadows.core.backend import Backend
from shadows.core.cancellation import CancelGuard
from shadows.core.execution import now_ms
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff, sleep_unless
from shadows.operations.registry import Beat, Presence, beat, leave

logger = logging.getLogger("shadows.worker")

#: The share of the heartbeat window after which an unconfirmed worker fences its tasks.
FENCE_AT = 0.7


class WorkerNameTaken(RuntimeError):
    """Another live worker runs under this worker's name on the same shadow."""


class Heartbeat:
    """Announces one worker every ``interval`` seconds until stopped; each announcement
    lasts the shadow's ``missed_heartbeats`` intervals."""

    def __init__(
        self,
        shadow: Backend,
        interval: float,
        reconnect_cap: float,
        presence: Callable[[], Presence],
        fence: Callable[[str], None],
    ) -> None:
        self.shadow = shadow
        self.window_ms = max(1, int(interval * shadow.missed_heartbeats * 1000))
        # With one missed beat allowed, beat twice per interval, or the entry would lapse
        # between two punctual beats.
        self.interval = interval if shadow.missed_heartbeats > 1 else interval / 2
        self.fence_after = self.window_ms / 1000 * FENCE_AT
        #: Beats an entry has had once it has existed for a whole window.
        self.beats_per_window = math.ceil(self.window_ms / 1000 / self.interval - 1e-9) + 1
        self.reconnect_cap = reconnect_cap
        self._presence = presence
        self._fence = fence
        self._halt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: This run's instance token (a new one per run).
        self.token = ""
        #: When the last beat that found this instance listed was sent (monotonic).
        self.confirmed = 0.0
        #: Set while beats are confirmed in time: the worker reads only then.
        self.usable = asyncio.Event()
        #: Another instance took the name after this one's entry lapsed.
        self.superseded = False
        #: Called after each confirmed beat (the worker records its shard count).
        self.announce: Callable[[], Awaitable[None]] | None = None

    async def claim(
        self,
        stopping: asyncio.Event,
        outage: Callable[[BaseException, Backoff], Awaitable[None]],
    ) -> bool:
        """Enter the registry under a fresh token before taking any work.

        Waits out Redis outages (``outage`` reports and waits) and an entry of the name
        left by a dead instance; raises :class:`WorkerNameTaken` when the holder beats
        again meanwhile. ``False`` when ``stopping`` was set first.
        """
        self.token = uuid.uuid4().hex
        self.superseded = False
        backoff = Backoff(self.reconnect_cap)
        holder: Beat | None = None
        name = self._presence().name
        guard = CancelGuard()
        while not stopping.is_set():
            guard.check()
            sent = time.monotonic()
            try:
                found = await beat(self.shadow, self._presence(), self.window_ms, now_ms())
            except CONNECTION_ERRORS as error:
                await outage(error, backoff)
                continue
            if found.status != "taken":
                self._confirm(sent)
                return True
            if holder is not None and found.beats != holder.beats:
                raise WorkerNameTaken(
                    f"another worker named {name!r} is running on shadow "
                    f"{self.shadow.name!r} (it is still beating): give each worker a name "
                    "of its own"
                )
            if holder is None:
                logger.warning(
                    "The name %s is held by another instance; waiting up to %.1f s for its "
                    "entry to lapse (a worker that just died) before refusing to start",
                    name,
                    found.ttl_ms / 1000,
                )
            holder = found
            lapses_in = found.ttl_ms / 1000 if found.ttl_ms > 0 else self.interval
            await sleep_unless(stopping, max(0.01, min(lapses_in, self.interval / 2)))
        return False

    def start(self, name: str) -> None:
        self._halt.clear()
        self._task = asyncio.create_task(self._run(), name=name)
        self._watch()

    async def stop(self) -> None:
        """Stop beating and leave the registry (best effort: else the entry expires)."""
        self._halt.set()
        self.usable.set()  # nobody waits for a beat any more
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is not None:
            # A beat stuck on an unreachable Redis must not hold up the worker's exit.
            grace = max(self.interval, 1.0)
            await asyncio.wait({task}, timeout=grace)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not self.token:
            return
        token, self.token = self.token, ""
        name = self._presence().name
        try:
            await asyncio.wait_for(leave(self.shadow, name, token), max(self.interval, 1.0))
        except Exception as error:  # unreachable, timed out, refused: all the same here
            logger.info("Could not leave the worker registry (%s); the entry will expire", error)

    async def wait_usable(self, stopping: asyncio.Event) -> None:
        """Wait until a beat is confirmed again (or ``stopping`` is set)."""
        usable = asyncio.ensure_future(self.usable.wait())
        halted = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({usable, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            usable.cancel()
            halted.cancel()

    def _confirm(self, sent: float) -> None:
        self.confirmed = max(self.confirmed, sent)
        if time.monotonic() - self.confirmed <= self.fence_after:
            self.usable.set()

    def _watch(self) -> None:
        """The fence: a timer callback, not a task, so that it runs first after a pause."""
        self._timer = None
        if self._halt.is_set():
            return
        if self.usable.is_set() and time.monotonic() - self.confirmed > self.fence_after:
            self.usable.clear()
            self._fence(
                "its heartbeat was not confirmed for "
                f"{time.monotonic() - self.confirmed:.1f} s: other workers may take its messages"
            )
        tick = min(0.1, self.fence_after / 10)
        self._timer = asyncio.get_running_loop().call_later(tick, self._watch)

    async def _run(self) -> None:
        backoff = Backoff(self.reconnect_cap)
        failing = False
        guard = CancelGuard()
        await sleep_unless(self._halt, self.interval)  # claim() has just beaten
        while not self._halt.is_set():
            guard.check()
            wait = self.interval
            sent = time.monotonic()
            try:
                found = await beat(self.shadow, self._presence(), self.window_ms, now_ms())
                backoff.reset()
                failing = False
                if found.status == "taken":
                    self.superseded = True
                    self.usable.clear()
                    self._fence("another instance of this worker's name took over its entry")
                    return
                if found.status == "new":
                    # The entry had lapsed: its messages may be another worker's by now.
                    # The fence has cancelled the tasks already, unless this reply came
                    # first (a blocked event loop); a recent confirmation means the entry
                    # went with Redis's data, and nobody can have taken anything.
                    logger.warning("This worker's registry entry had lapsed; back in it")
                    stale = time.monotonic() - self.confirmed > self.fence_after
                    if stale and self.usable.is_set():
                        self.usable.clear()
                        self._fence("its registry entry lapsed")
                self._confirm(sent)
                if self.announce is not None:
                    await self.announce()
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
