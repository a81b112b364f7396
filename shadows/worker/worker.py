"""The consumer side: a process (or part of one) that runs a shadow's tasks.

A worker runs several loops on one event loop, over every shard it reads (``shards.py``):

* the read loop takes ready work from the streams through the consumer group, fairly
  over the shards, in batches of at most the free slots, starts a task per message the
  moment a slot frees, and takes over or reclaims (XAUTOCLAIM) dead workers' messages;
* the scheduler loop moves due tasks from the queues to the streams (one Lua script);
* the lease loop keeps renewing the claim of every running message so that a long task is
  never taken over by another worker, and cancels a task whose claim it can no longer
  renew before anyone else may take it (fencing);
* the strike follower keeps the worker's list of strikes in step with Redis;
* the heartbeat keeps the worker listed in the registry of live workers.

Optionally, from ``async with`` to its end, it serves a health check and Prometheus
metrics over HTTP (``healthcheck_port``, ``metrics_port``; see ``endpoints.py``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from redis.exceptions import ResponseError

from shadows.core.cancellation import CancelGuard
from shadows.core.deliveries import new_instance
from shadows.core.execution import now_ms
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff, sleep_unless
from shadows.operations.endpoints import checked_host
from shadows.operations.health import HealthCheck
from shadows.operations.metrics import WorkerMetrics
from shadows.operations.registry import Presence
from shadows.operations.strikes import StrikeList
from shadows.operations.tally import encode_tally
from shadows.producer.shadow import Shadow
from shadows.worker.caps import RunCaps, nothing_left
from shadows.worker.completions import Completions
from shadows.worker.continuity import Continuity, seed_automatic_tasks
from shadows.worker.dispatch import Dispatcher
from shadows.worker.heartbeat import Heartbeat, WorkerNameTaken
from shadows.worker.loops import watched
from shadows.worker.observing import Observing
from shadows.worker.options import checked_count, checked_port, checked_seconds, default_worker_name
from shadows.worker.outcome import Outcomes
from shadows.worker.reader import StreamReader
from shadows.worker.release import release_leftovers
from shadows.worker.revocations import Revocations
from shadows.worker.runner import Runner
from shadows.worker.scheduler import run_scheduler
from shadows.worker.shards import Shards, gone
from shadows.worker.signals import graceful, install_signal_handlers
from shadows.worker.strike_follower import StrikeFollower
from shadows.worker.takeover import Takeover
from shadows.worker.unknown import UnknownTasks

logger = logging.getLogger("shadows.worker")


class Worker:
    """Runs the tasks of ``shadow``, at most ``concurrency`` at a time."""

    def __init__(
        self,
        shadow: Shadow,
        name: str | None = None,
        concurrency: int = 10,
        redelivery_timeout: timedelta = timedelta(minutes=5),
        reconnection_delay: timedelta = timedelta(seconds=5),
        minimum_check_interval: timedelta = timedelta(milliseconds=250),
        scheduling_resolution: timedelta = timedelta(milliseconds=250),
        schedule_automatic_tasks: bool = True,
        max_deliveries: int = 5,
        heartbeat_interval: timedelta | None = None,
        *,
        healthcheck_port: int | None = None,
        metrics_port: int | None = None,
        endpoint_host: str | None = None,
        maximum_loop_lag: timedelta = timedelta(seconds=5),
        unknown_task_grace: timedelta = timedelta(minutes=5),
    ) -> None:
        self.shadow = shadow
        self.name = name or default_worker_name()
        self.concurrency = checked_count(concurrency, "concurrency")
        self.redelivery_timeout = redelivery_timeout
        self.reconnection_delay = reconnection_delay
        self.minimum_check_interval = minimum_check_interval
        self.scheduling_resolution = scheduling_resolution
        self.schedule_automatic_tasks = schedule_automatic_tasks
        #: A message delivered this often without being acknowledged (its workers died
        #: running it) is dead-lettered as poison instead of being run again.
        self.max_deliveries = checked_count(max_deliveries, "max_deliveries")
        #: The shadow's ``heartbeat_interval`` unless this worker was given its own.
        self.heartbeat_interval = (
            shadow.heartbeat_interval if heartbeat_interval is None else heartbeat_interval
        )
        #: Ports of the health check and metrics endpoints; port 0 picks a free one, and
        #: the attribute then holds the port chosen once the worker is entered.
        self.healthcheck_port = checked_port(healthcheck_port, "healthcheck_port")
        self.metrics_port = checked_port(metrics_port, "metrics_port")
        #: The interface the endpoints listen on (``None``: every interface).
        self.endpoint_host = checked_host(endpoint_host)
        self.maximum_loop_lag = maximum_loop_lag
        #: How long a message for a task no live worker registers is handed back before
        #: it is dead-lettered (see :mod:`shadows.worker.unknown`).
        self.unknown_task_grace = unknown_task_grace

        self._redelivery = checked_seconds(redelivery_timeout, "redelivery_timeout", 0.05)
        self._reconnect_cap = checked_seconds(reconnection_delay, "reconnection_delay")
        self._check = checked_seconds(minimum_check_interval, "minimum_check_interval", 0.001)
        self._resolution = checked_seconds(scheduling_resolution, "scheduling_resolution", 0.001)
        beat_every = checked_seconds(self.heartbeat_interval, "heartbeat_interval", 0.01)
        grace = checked_seconds(unknown_task_grace, "unknown_task_grace")
        #: Hands back messages of tasks this worker does not register.
        self.unknown = UnknownTasks(shadow, self.name, grace, beat_every)

        self._slot_freed = asyncio.Event()
        self._idle = asyncio.Event()
        self._stopping = asyncio.Event()
        self._scheduler_wake = asyncio.Event()
        self._forced = False
        self._running = False
        #: stop() came before the run it is meant for: that run returns at once.
        self._stop_early = False
        self._caps = RunCaps()
        self._shards = Shards(shadow, shadow.shards)  # its own N and every N recorded
        self._reader = StreamReader(
            shadow,
            self.name,
            redelivery_timeout,
            block=self._check,
            # Claims of dead workers are looked for this often (cheap: one XAUTOCLAIM).
            claim_every=min(max(self._redelivery / 4, self._check), 5.0),
            shards=self._shards,
        )
        #: Notices that Redis lost the shadow's data and puts back what this worker knows.
        self.continuity = Continuity(
            shadow,
            self.name,
            beat_every,
            max(self._redelivery, 4 * beat_every),
            lambda: list(self._dispatch.messages.values()),
            self._reseed,
        )
        self._completions = Completions(
            shadow, self.name, self._reconnect_cap, self._scheduler_wake, self.continuity.check
        )
        self._completions.outage = self._recover
        #: The strikes this worker honours, kept in step with Redis while it runs.
        self.strikes = StrikeList()
        #: How many calls this worker acknowledged without running them, by task name.
        self.stricken: Counter[str] = Counter()
        #: Runs dropped by a cooldown or a rate limit, by task.
        self.dropped: Counter[str] = Counter()
        self._follower: StrikeFollower | None = None
        self._started_ms = 0
        self._heartbeat = Heartbeat(
            shadow, beat_every, self._reconnect_cap, self._presence, self._fence
        )
        self._heartbeat.announce = self._shards.announce  # every beat: N in the layout
        self._reader.takeover = Takeover(
            shadow,
            self.name,
            lambda: self._heartbeat.token,
            self._heartbeat.window_ms,
            self._heartbeat.beats_per_window,
        )
        #: This run holds the worker's name in the registry (the consumer is its own).
        self._named = False
        #: Counters and histograms of this worker (OpenTelemetry and Prometheus).
        self.metrics = WorkerMetrics(shadow, self.name, self.strikes)
        self.continuity.shards = self.metrics.shards = lambda: self._shards.count
        self.continuity.settled = lambda: self._completions.settled
        #: The verdict behind ``healthcheck_port``.
        self.health = HealthCheck(
            self,
            maximum_loop_lag=checked_seconds(maximum_loop_lag, "maximum_loop_lag", 0.01),
            maximum_read_age=max(30.0, 2 * self._reconnect_cap + 4 * self._check),
        )
        self._observing = Observing(self.name, self.health, self.metrics, self.endpoint_host)
        # The path of a message: reader -> dispatch -> runner -> outcome -> completions.
        settling: set[str] = set()  # messages whose outcome is being settled: not fenced
        outcomes = Outcomes(shadow, self.metrics, self._completions, self._scheduler_wake, settling)
        self._runner = Runner(
            shadow,
            self,
            strikes=self.strikes,
            stricken=self.stricken,
            dropped=self.dropped,
            caps=self._caps,
            unknown=self.unknown,
            metrics=self.metrics,
            outcomes=outcomes,
            lease_ms=int(self._redelivery * 1000),
            reconnect_cap=self._reconnect_cap,
            instance=lambda: self._reader.instance,
        )
        self._dispatch = Dispatcher(
            shadow,
            self.name,
            self._reader,
            self._runner,
            max_deliveries=max_deliveries,
            redelivery=self._redelivery,
            stopping=self._stopping,
            slot_freed=self._slot_freed,
            idle=self._idle,
            settling=settling,
        )
        self._active = self._dispatch.active  # by message id, the running tasks
        #: Cancellations of running work (``shadow.cancel``) this worker acts on.
        self.revocations = Revocations(shadow, self._dispatch.active, self._dispatch.messages)
        self._dispatch.revocations = self._runner.revocations = self.revocations

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, shadow={self.shadow.name!r})"

    async def __aenter__(self) -> Self:
        self.shadow.client  # noqa: B018 -- connects the shadow now, on this loop
        await self._observe()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        self._stop_early = False  # the block is over: a later run starts afresh
        await self._observing.stop()

    # -- public API ------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Run tasks until :meth:`stop`, SIGTERM or SIGINT; running tasks finish first."""
        await self._run(until_finished=False)

    async def run_until_finished(self) -> None:
        """Run until nothing is due, scheduled or running any more."""
        await self._run(until_finished=True)

    async def run_at_most(
        self, iterations_by_key: Mapping[str, int] | Mapping[str | Callable[..., Any], int]
    ) -> None:
        """Like :meth:`run_until_finished`, but run the tasks (by name, function or
        handle) or keys at most n times.

        Later deliveries of a capped task or key are acknowledged without running, which
        ends chains such as perpetual tasks; useful in tests.
        """
        self._caps.set(iterations_by_key)
        try:
            await self._run(until_finished=True)
        finally:
            self._caps.clear()

    def stop(self, force: bool = False) -> None:
        """Stop taking work; running tasks finish first unless ``force``. Before a run,
        the next run returns at once without taking anything."""
        if not self._running:
            self._stop_early = True
        self._stopping.set()
        self._slot_freed.set()
        self._idle.set()
        if force and not self._forced:
            self._forced = True
            self._dispatch.cancel_all()

    @property
    def active_keys(self) -> list[str]:
        """Keys of the tasks running on this worker now."""
        return [message.key for message in self._dispatch.messages.values()]

    @property
    def is_running(self) -> bool:
        """Whether a ``run_*`` method is in progress."""
        return self._running

    @property
    def is_stopping(self) -> bool:
        """Whether the worker has been asked to stop and is finishing its tasks."""
        return self._running and self._stopping.is_set()

    @property
    def running_count(self) -> int:
        """How many of this worker's slots are taken now."""
        return len(self._active)

    # -- observability ---------------------------------------------------------------

    async def _observe(self) -> None:
        """Start reporting: metrics to collectors, and the HTTP endpoints if asked."""
        if self._observing.active:
            return
        ports = await self._observing.start(
            self.shadow.client, self.healthcheck_port, self.metrics_port
        )
        self.healthcheck_port, self.metrics_port = ports

    # -- main loop -------------------------------------------------------------------

    async def _run(self, until_finished: bool) -> None:
        if self._running:
            raise RuntimeError(f"{self} is already running")
        if self._stop_early:
            self._stop_early = False
            logger.info("Worker %s was stopped before it started: not running", self.name)
            return
        self._running = True
        self._stopping.clear()
        self._forced = False
        self._reader.recover = True
        self._reader.instance = new_instance()  # deliveries to this run count once
        observed_here = not self._observing.active
        try:
            await self._observe()
        except BaseException:
            self._running = False
            raise
        restore_signals = install_signal_handlers(graceful(self.stop, self._stopping))
        self._started_ms = now_ms()
        self._named = False
        self.health.begin()
        self._completions.start()
        background = watched(
            asyncio.create_task(
                run_scheduler(
                    self._shards.all,
                    self._resolution,
                    self._reconnect_cap,
                    self._stopping,
                    self._scheduler_wake,
                ),
                name=f"{self.name}:scheduler",
            ),
            asyncio.create_task(self._dispatch.leases.run(), name=f"{self.name}:leases"),
            asyncio.create_task(
                self.continuity.run(self._stopping), name=f"{self.name}:continuity"
            ),
        )
        logger.info(
            "Worker %s started on shadow %s (concurrency %d, tasks: %s)",
            self.name,
            self.shadow.name,
            self.concurrency,
            ", ".join(sorted(self.shadow.tasks)),
        )
        try:
            # Listed under this run's token before taking anything (or refused).
            self._named = await self._heartbeat.claim(self._stopping, self._pause_after)
            if self._named:
                self._heartbeat.start(f"{self.name}:heartbeat")
            await self._persist(self._shards.announce)  # and groups
            await self._load_strikes()
            background += watched(self._follow_strikes())
            if self.schedule_automatic_tasks:
                await self._persist(functools.partial(seed_automatic_tasks, self.shadow))
            await self._read_loop(until_finished)
            await self._dispatch.drain()
        except asyncio.CancelledError:
            self.stop(force=True)
            await self._dispatch.drain()
            raise
        finally:
            self._stopping.set()
            await self._completions.close()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._reader.close()
            if self._named and not self._heartbeat.superseded:
                await release_leftovers(self._shards.all(), self.name, self._reader.instance)
            await self._heartbeat.stop()
            restore_signals()
            self._running = False
            if observed_here:
                await self._observing.stop()
            logger.info("Worker %s stopped", self.name)
        if self._heartbeat.superseded:
            raise WorkerNameTaken(
                f"worker {self.name!r} stopped: another instance took its name on shadow "
                f"{self.shadow.name!r} while this one could not beat"
            )

    def _presence(self) -> Presence:
        return Presence(
            self.name,
            self.concurrency,
            len(self._active),
            self._started_ms,
            sorted(self.shadow.tasks),
            tally=encode_tally(self.metrics.series),
            token=self._heartbeat.token,
        )

    def _fence(self, reason: str) -> None:
        """Cancel every running task: this worker's claims may be someone else's now."""
        for message_id in list(self._active):
            self._dispatch.lose(message_id, reason)
        self._reader.recover = True
        if self._heartbeat.superseded:
            logger.error("Worker %s stops: %s", self.name, reason)
            self.stop(force=True)

    async def _persist(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run a start-up ``step``, waiting out Redis outages (until stopped)."""
        backoff = Backoff(self._reconnect_cap)
        guard = CancelGuard()
        while not self._stopping.is_set():
            guard.check()
            try:
                await step()
                return
            except CONNECTION_ERRORS as error:
                await self._pause_after(error, backoff)

    async def _load_strikes(self) -> None:
        """Know every strike in effect before the first message is read."""
        self._follower = StrikeFollower(
            self.shadow, self.strikes, self._reconnect_cap, self.revocations
        )
        await self._persist(self._follower.load)

    def _follow_strikes(self) -> asyncio.Task[None]:
        assert self._follower is not None
        return asyncio.create_task(self._follower.run(self._stopping), name=f"{self.name}:strikes")

    async def _pause_after(self, error: BaseException, backoff: Backoff) -> None:
        if not backoff.failing:
            self.metrics.disrupted()
        self.health.failed(error)
        delay = backoff.next()
        logger.warning("Redis unavailable (%s); retrying in %.1f s", error, delay)
        self._reader.recover = True
        await sleep_unless(self._stopping, delay)  # wakes early when asked to stop

    async def _read_loop(self, until_finished: bool) -> None:
        backoff = Backoff(self._reconnect_cap)
        block = not until_finished
        guard = CancelGuard()
        while not self._stopping.is_set():
            guard.check()
            free = self.concurrency - len(self._active)
            if free <= 0 or self._dispatch.paused():
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            # A blocking read ends early when the worker stops or, when running until
            # finished, when its last task ends (that may be the end of all work).
            wake = self._stopping
            if until_finished and self._active:
                self._idle.clear()
                wake = self._idle
            if not self._heartbeat.usable.is_set():
                # Fenced: nothing is read until a beat is confirmed again.
                await self._heartbeat.wait_usable(self._stopping)
                continue
            try:
                batch = await self._reader.next(free, set(self._active), block, wake)
                self.health.read()
                if batch[0]:
                    await self._dispatch.start(*batch)
                    block = not until_finished
                elif until_finished:
                    if not self._active and await nothing_left(self._shards.all(), self._caps):
                        return
                    block = True
            except CONNECTION_ERRORS as error:
                # Messages read but not started stay in this consumer's pending list and
                # are picked up again once Redis answers.
                await self._pause_after(error, backoff)
                continue
            except ResponseError as error:
                if not gone(error):  # the group, or a stream deleted under a blocking read
                    raise
                logger.warning("The consumer group is gone (Redis lost its data?); recreating")
                self.continuity.wake()
                self._shards.forget_groups()
                await self._persist(self._shards.announce)  # and groups
                continue
            backoff.reset()

    def _recover(self) -> None:
        """An outage met outside the read loop: look at the own pending list next."""
        self._reader.recover = True

    async def _reseed(self, not_before: datetime) -> None:
        """After Redis lost its data: start the automatic chains again."""
        if self.schedule_automatic_tasks:
            await seed_automatic_tasks(self.shadow, not_before)
