"""The Prometheus families of ``shadows`` (``shadows_tasks_added``, ...): names, help
and labels, filled by the collector of ``metrics`` at each scrape."""

from __future__ import annotations

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

_TASK_LABELS = ["shadow", "worker", "task"]


class Families:
    """One empty set of the Prometheus families, filled by a collection."""

    def __init__(self) -> None:
        self.added = CounterMetricFamily(
            "shadows_tasks_added",
            "Tasks stored by add() or replace() (not an add of a key in use)",
            labels=["shadow", "task"],
        )
        self.debounced = CounterMetricFamily(
            "shadows_tasks_debounced",
            "Submissions folded into the waiting run of a debounce burst",
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
        self.dropped = CounterMetricFamily(
            "shadows_tasks_dropped",
            "Runs dropped by a Cooldown or a RateLimit(drop=True)",
            labels=_TASK_LABELS,
        )
        self.postponed = CounterMetricFamily(
            "shadows_tasks_postponed",
            "Runs postponed by a RateLimit (each time one goes back to the queue)",
            labels=_TASK_LABELS,
        )
        self.cancelled = CounterMetricFamily(
            "shadows_tasks_cancelled",
            "Executions the worker had taken, stopped by cancel() (running or not yet)",
            labels=_TASK_LABELS,
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
