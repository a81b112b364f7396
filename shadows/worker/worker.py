"""The consumer side: a process (or part of one) that runs a shadow's tasks.

A worker runs several loops on one event loop:

* the read loop takes ready work from the stream through the consumer group, in batches
  of at most the free slots, and starts a task per message the moment a slot frees;
* the scheduler loop moves due tasks from the queue to the stream (one Lua script);
* the lease loop keeps renewing the claim of every running message so that a long task is
  never taken over by another worker, and cancels a task whose claim it can no longer
  renew before anyone else may take it (fencing);
* the read loop also reclaims messages that a dead worker left unacknowledged for longer
  than ``redelivery_timeout`` (XAUTOCLAIM);
* the strike follower keeps the worker's list of strikes in step with Redis;
* the heartbeat keeps the worker listed in the registry of live workers.

Optionally, from ``async with`` to its end, it serves a health check and Prometheus
metrics over HTTP (``healthcheck_port``, ``metrics_port``; see ``endpoints.py``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shadows.core.cancellation import CancelGuard
from shadows.core.connection import private_client
from shadows.core.deliveries import new_instance
from shadows.core.execution import MALFORMED, POISON, Message, MessageError, now_ms, preview
from shadows.core.keys import WORKER_GROUP
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff, sleep_unless
from shadows.operations.dead_letters import Failure
from shadows.operations.endpoints import Endpoint, checked_host
from shadows.operations.health import HealthCheck
from shadows.operations.metrics import WorkerMetrics
from shadows.operations.registry import Presence
from shadows.operations.strike_follower import StrikeFollower
from shadows.operations.strikes import StrikeList
from shadows.operations.tally import encode_tally
from shadows.producer.shadow import Shadow
from shadows.worker.caps import RunCaps
from shadows.worker.completions import Completions
from shadows.worker.continuity import Continuity, seed_automatic_tasks
from shadows.worker.heartbeat import Heartbeat, WorkerNameTaken
from shadows.worker.leases import Leases
from shadows.worker.reader import FRESH, HELD, Entry, StreamReader, entry_id
from shadows.worker.release import abandon, acknowledge, release, release_leftovers
from shadows.worker.scheduler import run_scheduler
from shadows.worker.signals import install_signal_handlers
from shadows.worker.slots import acquire as acquire_slots
from shadows.worker.takeover import Takeover
from shadows.worker.unknown import UnknownTasks

logger = logging.getLogger("shadows.worker")

_instances = itertools.count(1)


def default_worker_name() -> str:
    """``host-pid``, with a suffix for the second and later workers of one process."""
    number = next(_instances)
    base = f"{socket.gethostname()}-{os.getpid()}"
    return base if number == 1 else f"{base}-{number}"


def _seconds(value: timedelta, name: str, minimum: float = 0.0) -> float:
    if not isinstance(value, timedelta):
        raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
    seconds = value.total_seconds()
    if seconds < minimum:
        raise ValueError(f"{name} must be at least {minimum} s, not {seconds} s")
    return seconds


def _port(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{name} must be a port number from 0 to 65535, not {value!r}")
    return value


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
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
        self.shadow = shadow
        self.name = name or default_worker_name()
        self.concurrency = concurrency
        self.redelivery_timeout = redelivery_timeout
        self.reconnection_delay = reconnection_delay
        self.minimum_check_interval = minimum_check_interval
        self.scheduling_resolution = scheduling_resolution
        self.schedule_automatic_tasks = schedule_automatic_tasks
        if not isinstance(max_deliveries, int) or max_deliveries < 1:
            raise ValueError(f"max_deliveries must be a positive integer, not {max_deliveries!r}")
        #: A message delivered this often without being acknowledged (its workers died
        #: running it) is dead-lettered as poison instead of being run again.
        self.max_deliveries = max_deliveries
        #: The shadow's ``heartbeat_interval`` unless this worker was given its own.
        self.heartbeat_interval = (
            shadow.heartbeat_interval if heartbeat_interval is None else heartbeat_interval
        )
        #: Ports of the health check and metrics endpoints; port 0 picks a free one, and
        #: the attribute then holds the port chosen once the worker is entered.
        self.healthcheck_port = _port(healthcheck_port, "healthcheck_port")
        self.metrics_port = _port(metrics_port, "metrics_port")
        #: The interface the endpoints listen on (``None``: every interface).
        self.endpoint_host = checked_host(endpoint_host)
        self.maximum_loop_lag = maximum_loop_lag
        #: How long a message for a task no live worker registers is handed back before
        #: it is dead-lettered (see :mod:`shadows.worker.unknown`).
        self.unknown_task_grace = unknown_task_grace

        self._redelivery = _seconds(redelivery_timeout, "redelivery_timeout", 0.05)
        self._reconnect_cap = _seconds(reconnection_delay, "reconnection_delay")
        self._check = _seconds(minimum_check_interval, "minimum_check_interval", 0.001)
        self._resolution = _seconds(scheduling_resolution, "scheduling_resolution", 0.001)
        beat_every = _seconds(self.heartbeat_interval, "heartbeat_interval", 0.01)
        grace = _seconds(unknown_task_grace, "unknown_task_grace")
        #: Hands back messages of tasks this worker does not register.
        self.unknown = UnknownTasks(shadow, self.name, grace, beat_every)

        self._active: dict[str, asyncio.Task[None]] = {}  # by message id
        self._messages: dict[str, Message] = {}  # by message id
        #: Messages whose run is over and whose outcome is being settled (not fenced).
        self._settling: set[str] = set()
        #: START calls sent in the background for fresh messages (the loop holds tasks
        #: only weakly: an unreferenced one could vanish mid-call).
        self._marking: set[asyncio.Task[Any]] = set()
        self._leases = Leases(shadow, self.name, self._redelivery, self._messages.get, self._lose)
        self._slot_freed = asyncio.Event()
        self._idle = asyncio.Event()
        self._stopping = asyncio.Event()
        self._scheduler_wake = asyncio.Event()
        self._forced = False
        self._running = False
        #: stop() came before the run it is meant for: that run returns at once.
        self._stop_early = False
        self._caps = RunCaps()
        self._reader = StreamReader(
            shadow,
            self.name,
            redelivery_timeout,
            block=self._check,
            # Claims of dead workers are looked for this often (cheap: one XAUTOCLAIM).
            claim_every=min(max(self._redelivery / 4, self._check), 5.0),
        )
        #: Notices that Redis lost the shadow's data and puts back what this worker knows.
        self.continuity = Continuity(
            shadow,
            self.name,
            beat_every,
            max(self._redelivery, 4 * beat_every),
            lambda: list(self._messages.values()),
            self._reseed,
        )
        self._completions = Completions(
            shadow,
            self.name,
            self._reconnect_cap,
            self._scheduler_wake,
            self.continuity.check,
            self._recover,
        )
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
        self._reader.takeover = Takeover(
            shadow, self.name, lambda: self._heartbeat.token, self._heartbeat.window_ms
        )
        #: This run holds the worker's name in the registry (the consumer is its own).
        self._named = False
        #: Counters and histograms of this worker (OpenTelemetry and Prometheus).
        self.metrics = WorkerMetrics(shadow, self.name, self.strikes)
        #: The verdict behind ``healthcheck_port``.
        self.health = HealthCheck(
            self,
            maximum_loop_lag=_seconds(maximum_loop_lag, "maximum_loop_lag", 0.01),
            maximum_read_age=max(30.0, 2 * self._reconnect_cap + 4 * self._check),
        )
        self._endpoints: list[Endpoint] = []
        self._probes: Redis | None = None
        self._observing = False

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
        await self._unobserve()

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
            for task in list(self._active.values()):
                task.cancel()

    @property
    def active_keys(self) -> list[str]:
        """Keys of the tasks running on this worker now."""
        return [message.key for message in self._messages.values()]

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
        if self._observing:
            return
        self._observing = True
        # Probes and scrapes read Redis on connections of their own (opened on first use).
        self._probes = private_client(self.shadow.client, connections=2)
        self.metrics.attach(self._probes)
        self.health.start(self._probes)
        try:
            health, metrics = self.healthcheck_port, self.metrics_port
            if health is not None and health == metrics and health != 0:
                self._serve(health, with_health=True, with_metrics=True)
            else:
                if health is not None:
                    self.healthcheck_port = self._serve(health, True, False)
                if metrics is not None:
                    self.metrics_port = self._serve(metrics, False, True)
        except BaseException:
            await self._unobserve()
            raise

    def _serve(self, port: int, with_health: bool, with_metrics: bool) -> int:
        health = self.health if with_health else None
        endpoint = Endpoint(port, health, with_metrics, self.endpoint_host)
        self._endpoints.append(endpoint)
        served = " and ".join(
            name for name, on in (("health check", with_health), ("metrics", with_metrics)) if on
        )
        where = "" if self.endpoint_host is None else f" of {self.endpoint_host}"
        logger.info("Worker %s serves its %s on port %d%s", self.name, served, endpoint.port, where)
        return endpoint.port

    async def _unobserve(self) -> None:
        if not self._observing:
            return
        self._observing = False
        endpoints, self._endpoints = self._endpoints, []
        for endpoint in endpoints:
            await asyncio.to_thread(endpoint.close)
        self.health.stop()
        self.metrics.detach()
        probes, self._probes = self._probes, None
        if probes is not None:
            await probes.aclose()

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
        observed_here = not self._observing
        try:
            await self._observe()
        except BaseException:
            self._running = False
            raise
        restore_signals = install_signal_handlers(self._on_signal)
        self._started_ms = now_ms()
        self._named = False
        self.health.begin()
        self._completions.start()
        background = [
            asyncio.create_task(
                run_scheduler(
                    self.shadow,
                    self._resolution,
                    self._reconnect_cap,
                    self._stopping,
                    self._scheduler_wake,
                ),
                name=f"{self.name}:scheduler",
            ),
            asyncio.create_task(self._leases.run(), name=f"{self.name}:leases"),
            asyncio.create_task(
                self.continuity.run(self._stopping), name=f"{self.name}:continuity"
            ),
        ]
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
            await self._prepare()
            await self._load_strikes()
            background.append(self._follow_strikes())
            if self.schedule_automatic_tasks:
                await self._persist(self._schedule_automatic_tasks)
            await self._read_loop(until_finished)
            await self._drain()
        except asyncio.CancelledError:
            self.stop(force=True)
            await self._drain()
            raise
        finally:
            self._stopping.set()
            await self._completions.close()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._reader.close()
            if self._named and not self._heartbeat.superseded:
                await release_leftovers(self.shadow, self.name, self._reader.instance)
            await self._heartbeat.stop()
            restore_signals()
            self._running = False
            if observed_here:
                await self._unobserve()
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
            self._lose(message_id, reason)
        self._reader.recover = True
        if self._heartbeat.superseded:
            logger.error("Worker %s stops: %s", self.name, reason)
            self.stop(force=True)

    def _on_signal(self, signum: signal.Signals) -> None:
        force = self._stopping.is_set()
        logger.warning(
            "%s received: %s",
            signum.name,
            "cancelling running tasks" if force else "finishing running tasks, then exiting",
        )
        self.stop(force=force)

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

    async def _prepare(self) -> None:
        await self._persist(self.shadow.ensure_group)

    async def _load_strikes(self) -> None:
        """Know every strike in effect before the first message is read."""
        self._follower = StrikeFollower(self.shadow, self.strikes, self._reconnect_cap)
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
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when the worker is asked to stop."""
        await sleep_unless(self._stopping, seconds)

    async def _read_loop(self, until_finished: bool) -> None:
        backoff = Backoff(self._reconnect_cap)
        block = not until_finished
        guard = CancelGuard()
        while not self._stopping.is_set():
            guard.check()
            free = self.concurrency - len(self._active)
            if free <= 0:
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
                entries, origin = await self._reader.next(free, set(self._active), block, wake)
                self.health.read()
                if entries:
                    await self._start(entries, origin)
                    block = not until_finished
                elif until_finished:
                    if not self._active and await self._finished():
                        return
                    block = True
            except CONNECTION_ERRORS as error:
                # Messages read but not started stay in this consumer's pending list and
                # are picked up again once Redis answers.
                await self._pause_after(error, backoff)
                continue
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                logger.warning("The consumer group is gone (Redis lost its data?); recreating")
                self.continuity.wake()
                await self._prepare()
                continue
            backoff.reset()

    async def _finished(self) -> bool:
        """Nothing ready, running or scheduled, in one consistent look (a script: work
        moves between the queue and the stream meanwhile)."""
        keys = self.shadow.keys
        while True:  # the queued keys first: the script declares their run keys
            names: list[str] = []
            if self._caps:
                queued: list[Any] = await self.shadow.client.zrange(keys.queue, 0, -1)
                names = [entry_id(key) for key in queued]
            ready, *rest = await self.shadow.scripts.pending_work(
                keys=[keys.stream, keys.queue, *(keys.run(name) for name in names)],
                args=[1 if self._caps else 0, *names],
            )
            if int(ready) >= 0:
                waiting = rest[0]
                break
        if not int(ready) and not waiting:
            return True
        if not self._caps or int(ready):
            return False
        # Under run_at_most, future runs of capped tasks (perpetual chains) do not count.
        return all(
            self._caps.spent(entry_id(key)) or self._caps.spent(entry_id(function))
            for key, function in zip(waiting[::2], waiting[1::2], strict=True)
        )

    async def _start(self, entries: list[Entry], origin: str = HELD) -> None:
        """Run ``entries``. Messages held for a while (recovered, reclaimed, or read late)
        have their claim confirmed first by the START script; see :mod:`reader` for the
        origins."""
        from shadows.worker.runner import run_message

        messages: list[Message] = []
        broken: list[str] = []
        for raw_id, fields in entries:
            message_id = entry_id(raw_id)
            if not fields:
                broken.append(message_id)  # deleted while pending
                continue
            try:
                messages.append(Message.parse(fields, message_id))
            except MessageError as error:
                logger.error(
                    "Dead-lettering malformed message %s: %s (fields: %r)",
                    message_id,
                    error,
                    preview(fields),
                )
                messages.append(Message.malformed(message_id, fields, error))
        instance = self._reader.instance
        if self._stopping.is_set():
            await release(self.shadow, self.name, [m.message_id for m in messages], instance)
            messages = []
        if broken:
            await acknowledge(self.shadow, broken)
        if not messages:
            return
        keys = self.shadow.keys
        sent = self._reader.sent_at
        if origin != HELD and time.monotonic() - sent > self._redelivery / 4:
            origin = HELD  # the reply came late: another worker may have claimed them
        start_keys = [keys.stream, *(keys.run(m.key) for m in messages)]
        start_args: list[str | int] = [WORKER_GROUP, self.name, now_ms(), instance]
        start_args += [m.message_id for m in messages]
        lost = []
        if origin == HELD:
            sent = time.monotonic()
            # START counts each delivery in Redis (see shadows.core.deliveries); one
            # delivered too often is dead-lettered as poison instead of running.
            lost, counts = await self.shadow.scripts.start(keys=start_keys, args=start_args)
            for message, count in zip(messages, counts, strict=True):
                if int(count) > self.max_deliveries and MALFORMED not in message.extra:
                    message.extra[POISON] = str(int(count))
        if lost:
            gone = {entry_id(message_id) for message_id in lost}
            for message in messages:
                if message.message_id in gone:
                    logger.warning(
                        "Not starting %s [key=%s]: another worker claimed its message "
                        "before this one heard of it",
                        message.function,
                        message.key,
                    )
            messages = [m for m in messages if m.message_id not in gone]
        for message in messages:
            self._leases.track(message.message_id, sent)
            task = asyncio.create_task(
                run_message(self, message), name=f"{message.function}:{message.key}"
            )
            self._active[message.message_id] = task
            self._messages[message.message_id] = message
            task.add_done_callback(functools.partial(self._task_done, message.message_id))
        if origin == FRESH:
            # Just delivered, in time: nobody else can hold them, so the tasks start now
            # (they were created first, so they run first) and START only records them as
            # running (a task that finished first is no longer pending, and START leaves
            # its record alone).
            marking = asyncio.create_task(
                self.shadow.scripts.start(keys=start_keys, args=start_args)
            )
            self._marking.add(marking)
            marking.add_done_callback(self._marked)

    def _marked(self, marking: asyncio.Task[Any]) -> None:
        """A background START ended; a failure only delays the ``running`` record."""
        self._marking.discard(marking)
        if not marking.cancelled() and marking.exception() is not None:
            logger.debug("Recording tasks as running failed: %s", marking.exception())

    def _task_done(self, message_id: str, task: asyncio.Task[None] | None = None) -> None:
        if task is not None and not task.cancelled() and task.exception() is not None:
            logger.error("Internal: running %s raised", task.get_name(), exc_info=task.exception())
        self._active.pop(message_id, None)
        self._messages.pop(message_id, None)
        self._leases.forget(message_id)
        self._slot_freed.set()
        if not self._active:
            self._idle.set()

    async def _drain(self) -> None:
        """Wait for the running tasks (they acknowledge their own messages)."""
        while self._active:
            tasks = list(self._active.values())
            await asyncio.wait(tasks)
            await asyncio.sleep(0)  # let the tasks' done callbacks run
            for message_id, task in list(self._active.items()):
                if task.done():
                    logger.error("Internal: finished task %s was still listed", task.get_name())
                    self._task_done(message_id)

    # -- completing work -------------------------------------------------------------

    def allowed_to_run(self, message: Message) -> bool:
        """Count a run against :meth:`run_at_most` caps; ``False`` once a cap is spent."""
        return self._caps.allow(message)

    async def finish(
        self,
        message: Message,
        outcome: str,
        next_message: Message | None = None,
        failure: Failure | None = None,
    ) -> bool:
        """Acknowledge ``message`` and record its outcome, or place ``next_message``;
        with ``failure``, keep it as a dead letter too.

        Retries through Redis outages for as long as the task waits; returns ``False``
        when the claim turned out to be someone else's. Every outcome is counted here:
        ``completed``, ``failed`` (a retry when ``next_message`` is a later attempt),
        ``drop`` (a malformed message, counted as failed) and ``stricken``.
        """
        try:
            self.metrics.finished(message, outcome, next_message, failure)
        except Exception:
            # Counting must never keep a message from being settled.
            logger.exception(
                "Cannot count the outcome of %s [key=%s]", message.function, message.key
            )
        self._settling.add(message.message_id)
        try:
            done = await self._completions.submit(message, outcome, next_message, failure)
        finally:
            self._settling.discard(message.message_id)
        if next_message is not None:
            self._scheduler_wake.set()  # it may be due before the scheduler's next look
        return done

    def _recover(self) -> None:
        """An outage met outside the read loop: look at the own pending list next."""
        self._reader.recover = True

    async def abandon(self, message: Message, outcome: str) -> None:
        """The last resort for a message that the COMPLETE script refuses to settle:
        acknowledge it and record ``outcome`` with plain commands, so that it neither
        blocks the queue nor keeps its key taken (see :func:`release.abandon`)."""
        try:
            await abandon(self.shadow, message, outcome)
        except Exception:
            logger.exception(
                "Cannot acknowledge %s [key=%s]; it is redelivered after the redelivery timeout",
                message.function,
                message.key,
            )

    async def acquire(self, message: Message, slots: list[tuple[str, int]]) -> bool | None:
        """Take a slot in each concurrency pool for ``message`` (see :func:`slots.acquire`)."""
        lease_ms = int(self._redelivery * 1000)
        return await acquire_slots(
            self.shadow,
            self.name,
            message,
            slots,
            lease_ms,
            self._reconnect_cap,
            self._reader.instance,
        )

    async def _schedule_automatic_tasks(self) -> None:
        """Start the chain of every automatic perpetual task that is not running yet."""
        await seed_automatic_tasks(self.shadow)

    async def _reseed(self, not_before: datetime) -> None:
        """After Redis lost its data: start the automatic chains again."""
        if self.schedule_automatic_tasks:
            await seed_automatic_tasks(self.shadow, not_before)

    def _lose(self, message_id: str, reason: str) -> None:
        """Stop a task whose claim is gone (fencing).

        If the message is still this consumer's once Redis answers again (a stall, not
        another worker's claim), the next read takes it back through START, which does
        not count a delivery: stalls alone never make a task look like poison.
        """
        task = self._active.get(message_id)
        self._leases.forget(message_id)
        self._reader.recover = True
        if message_id in self._settling:
            # Its run is over: nothing can overlap it any more, and its outcome settles
            # once Redis answers (or is refused, should another worker own it by then).
            # Cancelling would drop the outcome and run it again.
            logger.warning("Claim of %s unconfirmed (%s); its outcome waits", message_id, reason)
            return
        if task is not None and not task.done():
            logger.error("Cancelling task %s: %s", task.get_name(), reason)
            task.cancel()
