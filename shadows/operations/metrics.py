"""Metrics, kept in two forms: OpenTelemetry instruments and Prometheus families.

The OpenTelemetry instruments (``shadows.tasks.added``, ...) are no-ops until the
application installs an SDK ``MeterProvider``. The Prometheus families
(``shadows_tasks_added``, ...) are produced by a collector in this module's own
:data:`REGISTRY`, which a worker's ``metrics_port`` serves together with the default
registry of ``prometheus_client`` (process metrics, and any metrics of the application's
own). Having their own registry, they never clash with an OpenTelemetry Prometheus
exporter writing the same names into the default one.

Recording must cost next to nothing per task, so a worker keeps plain numbers, touched
only from its event loop (no locks, no label look-ups: about a tenth of what
``prometheus_client``'s own metric objects cost), and the collector turns them into
families when scraped. Outcomes are counted in one place, ``Outcomes.finish``. What
describes the present (tasks running, strikes in effect, queue and schedule depth) is
read at collection time; the depths come from Redis, through the worker's event loop.
Nothing polls.

A worker's series are reported from ``async with Worker(...)`` to its end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sized
from typing import TYPE_CHECKING

from opentelemetry import metrics as otel
from opentelemetry.metrics import CallbackOptions, Observation
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from shadows._version import __version__
from shadows.core.keys import WORKER_GROUP

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from shadows.core.backend import Backend
    from shadows.core.execution import Message
    from shadows.operations.dead_letters import Failure

#: The registry of every ``shadows_*`` Prometheus metric in this process.
REGISTRY = CollectorRegistry(auto_describe=True)

#: From a millisecond to an hour: tasks range from trivial to batch jobs.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
#: Lateness: a few ms is normal (the scheduler's resolution), minutes mean a backlog.
PUNCTUALITY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

#: How long a scrape waits for the depths from Redis before leaving them out.
DEPTH_TIMEOUT = 1.0
#: Depths read this recently are reused (several scrapers, or both gauges, at once).
DEPTH_FRESHNESS = 1.0

_meter = otel.get_meter("shadows", __version__)
_otel_added = _meter.create_counter(
    "shadows.tasks.added", unit="{task}", description="Tasks stored by add() or replace()"
)
_otel_started = _meter.create_counter(
    "shadows.tasks.started", unit="{task}", description="Runs started"
)
_otel_succeeded = _meter.create_counter(
    "shadows.tasks.succeeded", unit="{task}", description="Runs that completed"
)
_otel_failed = _meter.create_counter(
    "shadows.tasks.failed", unit="{task}", description="Tasks that failed for good"
)
_otel_retried = _meter.create_counter(
    "shadows.tasks.retried", unit="{task}", description="Runs that failed and will be retried"
)
_otel_stricken = _meter.create_counter(
    "shadows.tasks.stricken", unit="{task}", description="Tasks skipped by a strike"
)
_otel_handed_back = _meter.create_counter(
    "shadows.tasks.handed_back", unit="{task}", description="Messages of unknown tasks handed back"
)
_otel_duration = _meter.create_histogram(
    "shadows.task.duration",
    unit="s",
    description="How long runs took",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
_otel_punctuality = _meter.create_histogram(
    "shadows.task.punctuality",
    unit="s",
    description="How late runs started after their scheduled time",
    explicit_bucket_boundaries_advisory=list(PUNCTUALITY_BUCKETS),
)
_otel_disruptions = _meter.create_counter(
    "shadows.redis.disruptions", unit="{disruption}", description="Times Redis was lost"
)

_live: list[WorkerMetrics] = []
_live_lock = threading.Lock()
_added: dict[tuple[str, str], list[int]] = {}
_added_attributes: dict[tuple[str, str], Mapping[str, str]] = {}
_added_lock = threading.Lock()


def live() -> list[WorkerMetrics]:
    """The metrics of the workers reporting in this process now."""
    with _live_lock:
        return list(_live)


def task_added(shadow: str, task: str) -> None:
    """Count a task stored by a producer (from any thread)."""
    key = (shadow, task)
    with _added_lock:
        count = _added.get(key)
        if count is None:
            count = _added[key] = [0]
            _added_attributes[key] = {"shadows.shadow": shadow, "shadows.task": task}
        count[0] += 1
    _otel_added.add(1, _added_attributes[key])


class _Histogram:
    """Counts per bucket and a sum; cumulated only when collected."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        counts = list(self.counts)  # one consistent copy, whatever the loop does meanwhile
        buckets: list[tuple[str, float]] = []
        seen = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), counts, strict=True):
            seen += count
            buckets.append((bound, seen))
        return buckets


class _Series:
    """The numbers of one task on one worker."""

    __slots__ = (
        "attributes",
        "duration",
        "failed",
        "handed_back",
        "punctuality",
        "retried",
        "running",
        "started",
        "stricken",
        "succeeded",
    )

    def __init__(self, attributes: Mapping[str, str]) -> None:
        self.attributes = attributes
        self.started = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.stricken = 0
        self.handed_back = 0
        self.running = 0
        self.duration = _Histogram(DURATION_BUCKETS)
        self.punctuality = _Histogram(PUNCTUALITY_BUCKETS)


class WorkerMetrics:
    """What one worker counts, and what it reports about the present when collected."""

    def __init__(self, shadow: Backend, worker: str, strikes: Sized = ()) -> None:
        self.shadow = shadow
        self.worker = worker
        #: The strikes this worker applies (its ``StrikeList``), counted when collected.
        self.strikes = strikes
        self.disruptions = 0
        self.series: dict[str, _Series] = {}
        self._attributes = {"shadows.shadow": shadow.name, "shadows.worker": worker}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Redis | None = None
        self._depths: tuple[int, int] | None = None
        self._depths_at = 0.0
        self._refresh: asyncio.Future[tuple[int, int] | None] | None = None

    def task(self, name: str) -> _Series:
        series = self.series.get(name)
        if series is None:
            series = self.series[name] = _Series({**self._attributes, "shadows.task": name})
        return series

    # -- recording, on the worker's event loop ---------------------------------------

    def run_started(self, message: Message) -> _Series:
        """A run begins: count it, and how late it is."""
        series = self.task(message.function)
        lateness = max(0.0, time.time() - message.when_ms / 1000)
        series.started += 1
        series.running += 1
        series.punctuality.observe(lateness)
        _otel_started.add(1, series.attributes)
        _otel_punctuality.record(lateness, series.attributes)
        return series

    def run_ended(self, series: _Series, seconds: float) -> None:
        series.running -= 1
        series.duration.observe(seconds)
        _otel_duration.record(seconds, series.attributes)

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
            _otel_succeeded.add(1, series.attributes)
        elif outcome == "failed" or (outcome == "drop" and failure is not None):
            if next_message is not None and next_message.attempt > message.attempt:
                series.retried += 1
                _otel_retried.add(1, series.attributes)
            else:
                series.failed += 1
                _otel_failed.add(1, series.attributes)
        elif outcome == "stricken":
            series.stricken += 1
            _otel_stricken.add(1, series.attributes)

    def handed_back(self, message: Message) -> None:
        """A message of a task this worker does not register went back (to others)."""
        series = self.task(message.function)
        series.handed_back += 1
        _otel_handed_back.add(1, series.attributes)

    def disrupted(self) -> None:
        """Redis was lost (counted once per outage, not per reconnection attempt)."""
        self.disruptions += 1
        _otel_disruptions.add(1, self._attributes)

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
        keys = self.shadow.keys
        try:
            client = self.shadow.client if self._client is None else self._client
            async with client.pipeline(transaction=False) as pipe:
                pipe.xlen(keys.stream)
                pipe.xpending(keys.stream, WORKER_GROUP)
                pipe.zcard(keys.queue)
                length, pending, scheduled = await asyncio.wait_for(
                    pipe.execute(raise_on_error=False), DEPTH_TIMEOUT
                )
        except Exception:
            self._depths = None
            return None
        if isinstance(length, Exception) or isinstance(scheduled, Exception):
            self._depths = None
            return None
        delivered = 0 if isinstance(pending, Exception) else int(pending["pending"])
        self._depths = (max(0, int(length) - delivered), int(scheduled))
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


_TASK_LABELS = ["shadow", "worker", "task"]


class _Families:
    """One empty set of the Prometheus families, filled by a collection."""

    def __init__(self) -> None:
        self.added = CounterMetricFamily(
            "shadows_tasks_added",
            "Tasks stored by add() or replace() (not an add of a key in use)",
            labels=["shadow", "task"],
        )
        self.started = CounterMetricFamily(
            "shadows_tasks_started", "Runs started", labels=_TASK_LABELS
        )
        self.succeeded = CounterMetricFamily(
            "shadows_tasks_succeeded", "Runs that completed", labels=_TASK_LABELS
        )
        self.failed = CounterMetricFamily(
            "shadows_tasks_failed",
            "Tasks that failed for good (no retry left, or not runnable)",
            labels=_TASK_LABELS,
        )
        self.retried = CounterMetricFamily(
            "shadows_tasks_retried",
            "Runs that failed and were scheduled again by their Retry",
            labels=_TASK_LABELS,
        )
        self.stricken = CounterMetricFamily(
            "shadows_tasks_stricken", "Tasks skipped by a strike", labels=_TASK_LABELS
        )
        self.handed_back = CounterMetricFamily(
            "shadows_tasks_handed_back", "Unknown tasks handed back", labels=_TASK_LABELS
        )
        self.duration = HistogramMetricFamily(
            "shadows_task_duration",
            "How long runs took, in seconds (dependencies and the call)",
            labels=_TASK_LABELS,
        )
        self.punctuality = HistogramMetricFamily(
            "shadows_task_punctuality",
            "How late runs started after their scheduled time, in seconds",
            labels=_TASK_LABELS,
        )
        self.running = GaugeMetricFamily(
            "shadows_tasks_running", "Runs in progress", labels=_TASK_LABELS
        )
        self.queue = GaugeMetricFamily(
            "shadows_queue_depth",
            "Ready tasks in the stream not yet taken by a worker",
            labels=["shadow"],
        )
        self.schedule = GaugeMetricFamily(
            "shadows_schedule_depth",
            "Future tasks waiting for their time (including pending retries)",
            labels=["shadow"],
        )
        self.disruptions = CounterMetricFamily(
            "shadows_redis_disruptions",
            "Times the worker lost Redis and had to wait to reconnect",
            labels=["shadow", "worker"],
        )
        self.strikes = GaugeMetricFamily(
            "shadows_strikes_in_effect",
            "Strikes the worker applies now",
            labels=["shadow", "worker"],
        )

    def all(self) -> list[Metric]:
        return list(vars(self).values())


_PER_TASK = ("started", "succeeded", "failed", "retried", "stricken", "handed_back", "running")


class _Collector:
    """Turns the numbers of this process's workers into Prometheus families."""

    def describe(self) -> Iterable[Metric]:
        return _Families().all()

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        with _added_lock:
            added = [(key, count[0]) for key, count in _added.items()]
        for (shadow, task), count in added:
            families.added.add_metric([shadow, task], count)
        depths_seen: set[str] = set()
        for worker in live():
            shadow = worker.shadow.name
            for task, series in list(worker.series.items()):
                labels = [shadow, worker.worker, task]
                for name in _PER_TASK:
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


_meter.create_observable_up_down_counter(
    "shadows.tasks.running",
    callbacks=[_observe_running],
    unit="{task}",
    description="Runs in progress",
)
_meter.create_observable_gauge(
    "shadows.queue.depth",
    callbacks=[_observe_depths(0)],
    unit="{task}",
    description="Ready tasks in the stream not yet taken by a worker",
)
_meter.create_observable_gauge(
    "shadows.schedule.depth",
    callbacks=[_observe_depths(1)],
    unit="{task}",
    description="Future tasks waiting for their time",
)
_meter.create_observable_gauge(
    "shadows.strikes.in_effect",
    callbacks=[_observe_strikes],
    unit="{strike}",
    description="Strikes the worker applies now",
)
