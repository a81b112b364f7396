"""The one poller of a dashboard process: it reads Redis, every browser listens to it.

Every ``poll_interval`` it takes one :class:`~shadows.dashboard.pulse.Pulse` (one script
call), records it in the :class:`~shadows.dashboard.history.History` and serializes one
*tick* message. Event streams wait for the next tick and send that same text, so ten open
browsers cost Redis, and nearly the CPU, what one does. It samples whether anyone watches
or not, so that the charts cover the last hour when someone opens them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError

from shadows.core.cancellation import CancelGuard
from shadows.core.execution import now_ms
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff, sleep_unless
from shadows.dashboard.history import POINT_FIELDS, History
from shadows.dashboard.pulse import Pulse, read_pulse
from shadows.producer.shadow import Shadow

logger = logging.getLogger("shadows.dashboard")

#: Running tasks a tick lists (the running page says how many more there are).
TICK_RUNNING = 200
#: Rates are taken over at least this long (and five heartbeats), for smooth lines.
RATE_WINDOW = timedelta(seconds=10)


class Poller:
    """Reads ``shadow`` every ``interval`` and publishes each reading to its listeners."""

    def __init__(self, shadow: Shadow, interval: timedelta, history: timedelta) -> None:
        self.shadow = shadow
        self.interval = interval.total_seconds()
        window = max(RATE_WINDOW, 5 * shadow.heartbeat_interval)
        self.history = History(
            int(history.total_seconds() * 1000),
            int(self.interval * 1000),
            int(window.total_seconds() * 1000),
        )
        #: The last reading, and the error of the last attempt (``None`` if it worked).
        self.pulse: Pulse | None = None
        self.error: str | None = None
        #: Readings taken so far (tests and listeners wait on it).
        self.readings = 0
        self.tick = ""
        self._published = asyncio.Event()
        self._halt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._halt.clear()
            if self._published.is_set():
                self._published = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="shadows-dashboard-poller")

    async def stop(self) -> None:
        self._halt.set()
        self._published.set()  # listeners see the halt and end their streams
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        guard = CancelGuard()
        backoff = Backoff(5.0)
        next_at = time.monotonic()
        while not self._halt.is_set():
            guard.check()
            wait = await self.poll_once(backoff)
            next_at = max(next_at + self.interval, time.monotonic()) if wait is None else 0
            await sleep_unless(self._halt, wait if wait is not None else next_at - time.monotonic())

    async def poll_once(self, backoff: Backoff | None = None) -> float | None:
        """Take and publish one reading; returns how long to back off after a failure."""
        try:
            pulse = await read_pulse(self.shadow, now_ms())
        except (*CONNECTION_ERRORS, RedisError) as error:
            message = f"Redis unreachable: {error}"
            if isinstance(error, RedisError) and not isinstance(error, CONNECTION_ERRORS):
                message = f"Redis refused the dashboard's reading: {error}"
            if self.error is None:
                logger.warning("Dashboard of %s: %s", self.shadow.name, message)
            self.error = message
            self._publish(self._tick(None))
            return backoff.next() if backoff is not None else self.interval
        if self.error is not None:
            logger.info("Dashboard of %s: reading Redis again", self.shadow.name)
        self.error = None
        if backoff is not None:
            backoff.reset()
        self.pulse = pulse
        self.history.record(pulse)
        self._publish(self._tick(pulse))
        return None

    # -- listeners -------------------------------------------------------------------

    def _publish(self, tick: dict[str, Any]) -> None:
        self.readings += 1
        self.tick = json.dumps(tick, separators=(",", ":"))
        published, self._published = self._published, asyncio.Event()
        published.set()

    async def events(self) -> AsyncIterator[tuple[str, str]]:
        """``(event, data)`` pairs for one listener: the history, then every tick."""
        yield (
            "history",
            json.dumps(
                {
                    "fields": POINT_FIELDS,
                    "points": self.history.points(),
                    "span": self.history.span_ms / 1000,
                },
                separators=(",", ":"),
            ),
        )
        seen = -1
        while not self._halt.is_set():
            if self.readings == seen or not self.tick:
                await self._published.wait()
                continue
            seen = self.readings
            yield "tick", self.tick

    async def first_reading(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until a reading, good or failed, exists."""
        if self.readings == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), timeout)

    # -- what a tick says --------------------------------------------------------------

    def _tick(self, pulse: Pulse | None) -> dict[str, Any]:
        if pulse is None:
            return {"t": now_ms(), "error": self.error}
        now = pulse.taken_ms
        by_worker: dict[str, list[Any]] = {}
        for task in pulse.running:
            by_worker.setdefault(task.worker, []).append(task)
        return {
            "t": now,
            "error": None,
            "gauges": {
                "ready": pulse.ready,
                "scheduled": pulse.scheduled,
                "running": pulse.running_count,
                "workers": len(pulse.workers),
                "dead_letters": pulse.dead_letters,
                "strikes": pulse.strikes,
            },
            "point": self.history.latest_point(),
            "tasks": self.task_table(pulse),
            "running": [task.to_json(now) for task in pulse.running[:TICK_RUNNING]],
            "workers": [w.to_json(now, by_worker.get(w.name, ())) for w in pulse.workers],
        }

    def task_table(self, pulse: Pulse) -> dict[str, Any]:
        """Per task: running now, workers able to run it, and the counts of the last hour
        (or since the dashboard started, ``since``)."""
        since, counts = self.history.per_task()
        running = Counter(task.function for task in pulse.running)
        able = Counter(name for worker in pulse.workers for name in worker.tasks)
        names = sorted(set(counts) | set(running) | set(able))
        rows = [
            {
                "name": name,
                "running": running.get(name, 0),
                "workers": able.get(name, 0),
                **counts.get(name, dict.fromkeys(_COUNT_NAMES, 0)),
            }
            for name in names
        ]
        return {"since": since, "rows": rows}


_COUNT_NAMES = ("started", "succeeded", "failed", "retried", "stricken")
