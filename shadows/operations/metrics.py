"""Metrics, kept in two forms: OpenTelemetry instruments and Prometheus families.

The OpenTelemetry instruments (``shadows.tasks.added``, ...) are no-ops until the
application installs an SDK ``MeterProvider``. The Prometheus families
(``shadows_tasks_added``, ...) are produced by a collector in this module's own
:data:`REGISTRY`, which a worker's ``metrics_port`` serves together with the default
registry of ``prometheus_client`` (process metrics, and any metrics of the application's
own). Having their own registry, they never clash with an OpenTelemetry Prometheus
exporter writing the same names into the default one.

The instruments are defined in ``metric_instruments``, the families in
``metric_families``, the numbers a worker keeps in ``metric_numbers``; this module
records and collects them. Recording must cost next to nothing per task, so a worker
keeps plain numbers, touched only from its event loop (no locks, no label look-ups:
about a tenth of what ``prometheus_client``'s own metric objects cost), and the
collector turns them into families when scraped. Outcomes are counted in one place,
``Outcomes.finish``. What describes the present (tasks running, strikes in effect,
queue and schedule depth) is read at collection time; the depths come from Redis,
through the worker's event loop. Nothing polls.

A worker's series are reported from ``async with Worker(...)`` to its end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import TYPE_CHECKING

from opentelemetry import metrics as otel
from opentelemetry.metrics import CallbackOptions, Observation
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from shadows.core.keys import WORKER_GROUP
from shadows.operations import metric_instruments as instruments
from shadows.operations.metric_families import Families
from shadows.operations.metric_numbers import (
    DURATION_BUCKETS,
    PER_TASK,
    PUNCTUALITY_BUCKETS,
    Series,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from shadows.core.backend import Backend
    from shadows.core.execution import Message
    from shadows.operations.dead_letters import Failure

__all__ = [
    "DEPTH_FRESHNESS",
    "DEPTH_TIMEOUT",
    "DURATION_BUCKETS",
    "PUNCTUALITY_BUCKETS",
    "REGISTRY",
    "WorkerMetrics",
    "live",
    "task_added",
    "task_debounced",
]

#: The registry of every ``shadows_*`` Prometheus metric in this process.
REGISTRY = CollectorRegistry(auto_describe=True)

#: How long a scrape waits for the depths from Redis before leaving them out.
DEPTH_TIMEOUT = 1.0
#: Depths read this recently are reused (several scrapers, or both gauges, at once).
DEPTH_FRESHNESS = 1.0

_live: list[WorkerMetrics] = []
_live_lock = threading.Lock()
_produced: dict[tuple[str, str, str], list[int]] = {}
_produced_attributes: dict[tuple[str, str], Mapping[str, str]] = {}
_produced_lock = threading.Lock()


def live() -> list[WorkerMetrics]:
    """The metrics of the workers reporting in this process now."""
    with _live_lock:
        return list(_live)


def _produced_one(kind: str, shadow: str, task: str) -> Mapping[str, str]:
    """Count one ``kind`` (``added`` or ``debounced``) of a producer; the attributes."""
    key = (kind, shadow, task)
    with _produced_lock:
        count = _produced.get(key)
        if count is None:
            count = _produced[key] = [0]
        count[0] += 1
        attributes = _produced_attributes.get((shadow, task))
        if attributes is None:
            attributes = {"shadows.shadow": shadow, "shadows.task": task}
            _produced_attributes[(shadow, task)] = attributes
    return attributes


def task_added(shadow: str, task: str) -> None:
    """Count a task stored by a producer (from any thread)."""
    instruments.added.add(1, _produced_one("added", shadow, task))


def task_debounced(shadow: str, task: str) -> None:
    """Count a submission folded into a debounce burst's waiting run (from any thread)."""
    instruments.debounced.add(1, _produced_one("debounced", shadow, task))


class WorkerMetrics:
    """What one worker counts, and what it reports about the present when collected."""

    def __init__(self, shadow: Backend, worker: str, strikes: Sized = ()) -> None:
        self.shadow = shadow
        self.worker = worker
        #: The strikes this worker applies (its ``StrikeList``), counted when collected.
        self.strikes = strikes
        self.disruptions = 0
        #: How many shards the worker reads (the depths add up every shard's).
        self.shards: Callable[[], int] = lambda: 1
        self.series: dict[str, Series] = {}
        self._attributes = {"shadows.shadow": shadow.name, "shadows.worker": worker}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Redis | None = None
        self._depths: tuple[int, int] | None = None
        self._depths_at = 0.0
        self._refresh: asyncio.Future[tuple[int, int] | None] | None = None

    def task(self, name: str) -> Series:
        series = self.series.get(name)
        if series is None:
            series = self.series[name] = Series({**self._attributes, "shadows.task": name})
        return series

    # -- recording, on the worker's event loop ---------------------------------------

    def run_started(self, message: Message) -> Series:
        """A run begins: count it, and how late it is."""
        series = self.task(message.function)
        lateness = max(0.0, time.time() - message.when_ms / 1000)
        series.started += 1
        series.running += 1
        series.punctuality.observe(lateness)
        instruments.started.add(1, series.attributes)
        instruments.punctuality.record(lateness, series.attributes)
        return series

    def run_ended(self, series: Series, seconds: float) -> None:
        series.running -= 1
        series.duration.observe(seconds)
        instruments.duration.record(seconds, series.attributes)

    def finished(
        self,
        message: Message,
        outcome: str,
        next_message: Message | None,
        failure: Failure | None = None,
    ) -> None:
        """Count the outcome the worker reports to Redis for ``message``; a dropped
        (malformed) message is kept as a dead letter, so it counts as failed."""
        series = self.task(message.function)
        if outcome == "completed":
            series.succeeded += 1
            instruments.succeeded.add(1, series.attributes)
        elif outcome == "failed" or (outcome == "drop" and failure is not None):
            if next_message is not None and next_message.attempt > message.attempt:
                series.retried += 1
                instruments.retried.add(1, series.attributes)
            else:
                series.failed += 1
                instruments.failed.add(1, series.attributes)
        elif outcome == "stricken":
            series.stricken += 1
            instruments.stricken.add(1, series.attributes)
        elif outcome == "dropped":
            series.dropped += 1
            instruments.dropped.add(1, series.attributes)
        elif outcome == "postponed":
            series.postponed += 1
            instruments.postponed.add(1, series.attributes)
        elif outcome == "cancelled":
            series.cancelled += 1
            instruments.cancelled.add(1, series.attributes)

    def handed_back(self, message: Message) -> None:
        """A message of a task this worker does not register went back (to others)."""
        series = self.task(message.function)
        series.handed_back += 1
        instruments.handed_back.add(1, series.attributes)

    def disrupted(self) -> None:
        """Redis was lost (counted once per outage, not per reconnection attempt)."""
        self.disruptions += 1
        instruments.disruptions.add(1, self._attributes)

    # -- lifetime --------------------------------------------------------------------

    def attach(self, client: Redis | None = None) -> None:
        """Report this worker to collectors, reading Redis through the running loop, on
        ``client`` (default: the shadow's)."""
        self._loop = asyncio.get_running_loop()
        self._client = client
        with _live_lock:
            if self not in _live:
                _live.append(self)

    def detach(self) -> None:
        with _live_lock:
            if self in _live:
                _live.remove(self)
        self._loop = None
        self._client = None
        if self._refresh is not None:
            self._refresh.cancel()

    # -- reading the depths ----------------------------------------------------------

    async def read_depths(self) -> tuple[int, int] | None:
        """(ready messages not yet delivered, future tasks), or ``None`` if Redis fails."""
        shards = [self.shadow.keys.of_shard(shard) for shard in range(self.shards())]
        try:
            client = self.shadow.client if self._client is None else self._client
            async with client.pipeline(transaction=False) as pipe:
                for keys in shards:
                    pipe.xlen(keys.stream)
                    pipe.xpending(keys.stream, WORKER_GROUP)
                    pipe.zcard(keys.queue)
                found = await asyncio.wait_for(pipe.execute(raise_on_error=False), DEPTH_TIMEOUT)
        except Exception:
            self._depths = None
            return None
        ready = waiting = 0
        for length, pending, scheduled in zip(found[::3], found[1::3], found[2::3], strict=True):
            if isinstance(length, Exception) or isinstance(scheduled, Exception):
                self._depths = None
                return None
            delivered = 0 if isinstance(pending, Exception) else int(pending["pending"])
            ready += max(0, int(length) - delivered)
            waiting += int(scheduled)
        self._depths = (ready, waiting)
        self._depths_at = time.monotonic()
        return self._depths

    def depths(self) -> tuple[int, int] | None:
        """The depths for a collector, from whichever thread it runs in.

        From another thread, read them from Redis through the worker's loop (waiting at
        most about a second). On the worker's own loop a collector cannot wait, so it gets
        the last reading and a fresh one is started for next time.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return None
        if self._depths is not None and time.monotonic() - self._depths_at < DEPTH_FRESHNESS:
            return self._depths
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.ensure_future(self.read_depths())
            return self._depths
        future = asyncio.run_coroutine_threadsafe(self.read_depths(), loop)
        try:
            return future.result(DEPTH_TIMEOUT + 0.5)
        except Exception:
            future.cancel()
            return None


class _Collector:
    """Turns the numbers of this process's workers into Prometheus families."""

    def describe(self) -> Iterable[Metric]:
        return Families().all()

    def collect(self) -> Iterable[Metric]:
        families = Families()
        with _produced_lock:
            produced = [(key, count[0]) for key, count in _produced.items()]
        for (kind, shadow, task), count in produced:
            getattr(families, kind).add_metric([shadow, task], count)
        depths_seen: set[str] = set()
        for worker in live():
            shadow = worker.shadow.name
            for task, series in list(worker.series.items()):
                labels = [shadow, worker.worker, task]
                for name in PER_TASK:
                    getattr(families, name).add_metric(labels, getattr(series, name))
                for histogram, family in (
                    (series.duration, families.duration),
                    (series.punctuality, families.punctuality),
                ):
                    family.add_metric(labels, histogram.cumulative(), histogram.total)
            families.disruptions.add_metric([shadow, worker.worker], worker.disruptions)
            families.strikes.add_metric([shadow, worker.worker], len(worker.strikes))
            if shadow in depths_seen:
                continue
            depths = worker.depths()
            if depths is not None:
                depths_seen.add(shadow)
                families.queue.add_metric([shadow], depths[0])
                families.schedule.add_metric([shadow], depths[1])
        return families.all()


REGISTRY.register(_Collector())


def _observe_running(options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(series.running, series.attributes)
        for worker in live()
        for series in list(worker.series.values())
    ]


def _observe_strikes(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(len(worker.strikes), worker._attributes) for worker in live()]


def _observe_depths(index: int) -> otel.CallbackT:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        observations: dict[str, Observation] = {}
        for worker in live():
            shadow = worker.shadow.name
            if shadow in observations:
                continue
            depths = worker.depths()
            if depths is not None:
                observations[shadow] = Observation(depths[index], {"shadows.shadow": shadow})
        return list(observations.values())

    return observe


instruments.meter.create_observable_up_down_counter(
    "shadows.tasks.running",
    callbacks=[_observe_running],
    unit="{task}",
    description="Runs in progress",
)
instruments.meter.create_observable_gauge(
    "shadows.queue.depth",
    callbacks=[_observe_depths(0)],
    unit="{task}",
    description="Ready tasks in the stream not yet taken by a worker",
)
instruments.meter.create_observable_gauge(
    "shadows.schedule.depth",
    callbacks=[_observe_depths(1)],
    unit="{task}",
    description="Future tasks waiting for their time",
)
instruments.meter.create_observable_gauge(
    "shadows.strikes.in_effect",
    callbacks=[_observe_strikes],
    unit="{strike}",
    description="Strikes the worker applies now",
)
