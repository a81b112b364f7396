"""Is this worker really working? The answer behind ``healthcheck_port``.

A process that is alive is not necessarily a worker that consumes: it may have lost
Redis, be stuck reconnecting, have a read loop that stopped going round, or an event loop
blocked by synchronous code in an ``async`` task. The check answers healthy only when

1. a run is in progress (``run_forever``, ``run_until_finished``...);
2. the event loop is not stalled: a callback scheduled every few hundredths of a second
   is not late by more than ``maximum_loop_lag`` (:class:`LoopMonitor`);
3. Redis answers a ``PING`` sent through the worker's own connection pool, within a
   second;
4. the read loop has completed a read or claim within ``maximum_read_age``, unless every
   slot is busy (a full worker does not read) or the worker is stopping.

The check runs in the HTTP server's thread, not on the event loop, so it can report a
blocked loop while the loop is blocked, and it waits for the ``PING`` for a bounded time.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .worker import Worker

#: How long the check waits for Redis to answer ``PING``.
PING_TIMEOUT = 1.0


class LoopMonitor:
    """Measures the lag of an event loop: how late a periodic callback fires."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._due: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

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
        self._schedule(time.monotonic())

    def lag(self) -> float:
        """How far behind the loop is now, as seen from any thread (0 when on time)."""
        due = self._due
        return 0.0 if due is None else max(0.0, time.monotonic() - due)


class HealthCheck:
    """The health of one worker, evaluated from any thread."""

    def __init__(self, worker: Worker, maximum_loop_lag: float, maximum_read_age: float) -> None:
        self.worker = worker
        self.maximum_loop_lag = maximum_loop_lag
        #: How long the read loop may go without a successful read or claim.
        self.maximum_read_age = maximum_read_age
        self.monitor = LoopMonitor(interval=min(0.25, maximum_loop_lag / 4))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_read: float | None = None
        self._last_error: str | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.monitor.start()

    def stop(self) -> None:
        self.monitor.stop()
        self._loop = None

    # -- fed by the worker -----------------------------------------------------------

    def read(self) -> None:
        """The read loop completed a read or claim."""
        self._last_read = time.monotonic()
        self._last_error = None

    def failed(self, error: BaseException) -> None:
        """The read loop could not reach Redis."""
        self._last_error = f"{type(error).__name__}: {error}"

    # -- the verdict -----------------------------------------------------------------

    def evaluate(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)``; call it from another thread than the worker's loop."""
        worker = self.worker
        loop = self._loop
        if loop is None or loop.is_closed() or not worker.is_running:
            return False, {"status": "unhealthy", "reason": "the worker is not running"}
        lag = self.monitor.lag()
        if lag > self.maximum_loop_lag:
            return False, {
                "status": "unhealthy",
                "reason": f"the event loop has been blocked for {lag:.1f} s "
                f"(limit {self.maximum_loop_lag:g} s)",
                "loop_lag": round(lag, 3),
            }
        problem = self._ping(loop)
        if problem is not None:
            return False, {"status": "unhealthy", "reason": problem}
        running = worker.running_count
        details: dict[str, Any] = {
            "status": "ok",
            "loop_lag": round(lag, 3),
            "running": running,
        }
        if worker.is_stopping:
            details["status"] = "stopping"
            return True, details
        since = self._last_read
        age = None if since is None else time.monotonic() - since
        details["last_read"] = None if age is None else round(age, 3)
        saturated = running >= worker.concurrency
        if age is not None and age > self.maximum_read_age and not saturated:
            reason = f"no read from the stream for {age:.1f} s"
            if self._last_error:
                reason += f" (last error: {self._last_error})"
            return False, {"status": "unhealthy", "reason": reason, "last_read": round(age, 3)}
        return True, details

    def _ping(self, loop: asyncio.AbstractEventLoop) -> str | None:
        """``None`` when Redis answered, else what went wrong."""
        try:
            future = asyncio.run_coroutine_threadsafe(self._ping_on_loop(), loop)
        except RuntimeError:
            return "the worker is not running"
        try:
            future.result(PING_TIMEOUT + 0.5)
        except TimeoutError:
            future.cancel()
            return f"Redis did not answer PING within {PING_TIMEOUT:g} s"
        except Exception as error:
            return f"Redis does not answer: {type(error).__name__}: {error}"
        return None

    async def _ping_on_loop(self) -> None:
        await asyncio.wait_for(self.worker.shadow.client.ping(), PING_TIMEOUT)
