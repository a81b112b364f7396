"""Is this worker really working? The answer behind ``healthcheck_port``.

A process that is alive is not necessarily a worker that consumes: it may have lost
Redis, be stuck reconnecting, have a read loop that stopped going round, or an event loop
blocked by synchronous code in an ``async`` task. The check answers healthy only when

1. a run is in progress (``run_forever``, ``run_until_finished``...);
2. the event loop is not stalled: a callback scheduled every few hundredths of a second
   is not late by more than ``maximum_loop_lag`` (:class:`LoopMonitor`);
3. Redis answers, within a second, a ``PING`` sent from the worker's event loop on the
   probes' own connection (a probe never takes a connection of the worker's pool, nor
   waits behind its commands);
4. the read loop has completed a read or claim within ``maximum_read_age``, unless every
   slot is busy (a full worker does not read) or the worker is stopping.

The check runs in the HTTP server's thread, not on the event loop, so it can report a
blocked loop while the loop is blocked, and it waits for the ``PING`` for a bounded time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from shadows.core.backend import Backend

#: How long the check waits for Redis to answer ``PING``.
PING_TIMEOUT = 1.0


class LoopMonitor:
    """Measures the lag of an event loop: how late a periodic callback fires.

    Readable from any thread: :meth:`lag` is how overdue the next callback is now (it
    grows while the loop is blocked), :meth:`worst_since` the largest lateness of the
    callbacks that fired since a moment (a block that ended meanwhile).
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._due: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        #: (when, how late) of the recent callbacks that fired noticeably late.
        self._late: deque[tuple[float, float]] = deque(maxlen=32)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule(time.monotonic())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._due = None
        self._loop = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._due is not None and now - self._due > self.interval:
            self._late.append((now, now - self._due))
        self._schedule(now)

    def lag(self) -> float:
        """How far behind the loop is now (0 when on time)."""
        due = self._due
        return 0.0 if due is None else max(0.0, time.monotonic() - due)

    def worst_since(self, moment: float) -> float:
        """The largest lateness of a callback that fired after ``moment``."""
        return max((late for when, late in list(self._late) if when >= moment), default=0.0)


class Watched(Protocol):
    """What the health check reads of its worker (:class:`~shadows.Worker`, above it)."""

    @property
    def shadow(self) -> Backend: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def is_running(self) -> bool: ...

    @property
    def is_stopping(self) -> bool: ...

    @property
    def running_count(self) -> int: ...


class HealthCheck:
    """The health of one worker, evaluated from any thread."""

    def __init__(self, worker: Watched, maximum_loop_lag: float, maximum_read_age: float) -> None:
        self.worker = worker
        self.maximum_loop_lag = maximum_loop_lag
        #: How long the read loop may go without a successful read or claim.
        self.maximum_read_age = maximum_read_age
        self.monitor = LoopMonitor(interval=min(0.25, maximum_loop_lag / 4))
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The connection the checks read Redis through (the worker's pool until started).
        self._client: Redis | None = None
        #: When the read loop last completed a read or claim (``time.monotonic()``).
        self.last_read: float | None = None
        #: The error that made the read loop pause since then, if any.
        self.last_error: str | None = None
        self._since = time.monotonic()

    def start(self, client: Redis | None = None) -> None:
        """Watch the running loop; PING through ``client`` (default: the worker's)."""
        self._loop = asyncio.get_running_loop()
        self._client = client
        self.monitor.start()

    def stop(self) -> None:
        self.monitor.stop()
        self._loop = None
        self._client = None

    # -- fed by the worker -----------------------------------------------------------

    def begin(self) -> None:
        """A run starts: the read loop's first read is due from now on."""
        self._since = time.monotonic()
        self.last_read = None
        self.last_error = None

    def read(self) -> None:
        """The read loop completed a read or claim."""
        self.last_read = time.monotonic()
        self.last_error = None

    def failed(self, error: BaseException) -> None:
        """The read loop could not reach Redis."""
        self.last_error = f"{type(error).__name__}: {error}"

    # -- the verdict -----------------------------------------------------------------

    def evaluate(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)``; call it from another thread than the worker's loop."""
        worker = self.worker
        loop = self._loop
        if loop is None or loop.is_closed() or not worker.is_running:
            return False, {"status": "unhealthy", "reason": "the worker is not running"}
        if _running_loop() is loop:
            raise RuntimeError(
                "HealthCheck.evaluate() waits for the worker's event loop: call it from "
                "another thread (for example with asyncio.to_thread)"
            )
        began = time.monotonic()
        problem = self._blocked(self.monitor.lag()) or self._ping(loop)
        # A block that began or ended while we waited for the PING explains a slow answer.
        problem = self._blocked(self.monitor.worst_since(began)) or problem
        if problem is not None:
            return False, problem
        running = worker.running_count
        details: dict[str, Any] = {
            "status": "ok",
            "loop_lag": round(self.monitor.lag(), 3),
            "running": running,
        }
        if worker.is_stopping:
            details["status"] = "stopping"
            return True, details
        since = self.last_read
        age = time.monotonic() - (self._since if since is None else since)
        details["last_read"] = None if since is None else round(age, 3)
        saturated = running >= worker.concurrency
        if age > self.maximum_read_age and not saturated:
            reason = (
                f"no read from the stream for {age:.1f} s"
                if since is not None
                else f"no read from the stream since the worker started {age:.1f} s ago"
            )
            if self.last_error:
                reason += f" (last error: {self.last_error})"
            return False, {"status": "unhealthy", "reason": reason, "last_read": round(age, 3)}
        return True, details

    def _blocked(self, lag: float) -> dict[str, Any] | None:
        if lag <= self.maximum_loop_lag:
            return None
        return {
            "status": "unhealthy",
            "reason": f"the event loop was blocked for {lag:.1f} s "
            f"(limit {self.maximum_loop_lag:g} s)",
            "loop_lag": round(lag, 3),
        }

    def _ping(self, loop: asyncio.AbstractEventLoop) -> dict[str, Any] | None:
        """``None`` when Redis answered through the worker's loop, else why not.

        Gives up early when the loop turns out to be blocked: the caller reports that.
        """
        try:
            future = asyncio.run_coroutine_threadsafe(self._ping_on_loop(), loop)
        except RuntimeError:
            return {"status": "unhealthy", "reason": "the worker is not running"}
        deadline = time.monotonic() + PING_TIMEOUT + 0.5
        while not future.done():
            concurrent.futures.wait([future], timeout=0.02)
            lag = self.monitor.lag()
            if not future.done() and (lag > self.maximum_loop_lag or time.monotonic() > deadline):
                future.cancel()
                return self._blocked(lag) or self._no_answer()
        error = future.exception()
        if error is None:
            return None
        if isinstance(error, TimeoutError):  # the PING itself timed out on the loop
            return self._no_answer()
        return {
            "status": "unhealthy",
            "reason": f"Redis does not answer: {type(error).__name__}: {error}",
        }

    def _no_answer(self) -> dict[str, Any]:
        return {
            "status": "unhealthy",
            "reason": f"Redis did not answer PING within {PING_TIMEOUT:g} s",
        }

    async def _ping_on_loop(self) -> None:
        client = self.worker.shadow.client if self._client is None else self._client
        await asyncio.wait_for(client.ping(), PING_TIMEOUT)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
