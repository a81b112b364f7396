"""The OpenTelemetry instruments of ``shadows`` (meter ``shadows``).

They are no-ops until the application installs an SDK ``MeterProvider``. The names
mirror the Prometheus families of ``metric_families`` (``shadows.tasks.added`` for
``shadows_tasks_added``); both are listed in ``docs/observability.md``. The observable
instruments, read from the live workers, are created by ``metrics``.
"""

from __future__ import annotations

from opentelemetry import metrics as otel

from shadows._version import __version__
from shadows.operations.metric_numbers import DURATION_BUCKETS, PUNCTUALITY_BUCKETS

meter = otel.get_meter("shadows", __version__)

added = meter.create_counter(
    "shadows.tasks.added", unit="{task}", description="Tasks stored by add() or replace()"
)
debounced = meter.create_counter(
    "shadows.tasks.debounced",
    unit="{task}",
    description="Submissions folded into the waiting run of a debounce burst",
)
started = meter.create_counter("shadows.tasks.started", unit="{task}", description="Runs started")
succeeded = meter.create_counter(
    "shadows.tasks.succeeded", unit="{task}", description="Runs that completed"
)
failed = meter.create_counter(
    "shadows.tasks.failed", unit="{task}", description="Tasks that failed for good"
)
retried = meter.create_counter(
    "shadows.tasks.retried", unit="{task}", description="Runs that failed and will be retried"
)
stricken = meter.create_counter(
    "shadows.tasks.stricken", unit="{task}", description="Tasks skipped by a strike"
)
handed_back = meter.create_counter(
    "shadows.tasks.handed_back", unit="{task}", description="Messages of unknown tasks handed back"
)
dropped = meter.create_counter(
    "shadows.tasks.dropped",
    unit="{task}",
    description="Runs dropped by a Cooldown or a RateLimit(drop=True)",
)
postponed = meter.create_counter(
    "shadows.tasks.postponed", unit="{task}", description="Runs postponed by a RateLimit"
)
cancelled = meter.create_counter(
    "shadows.tasks.cancelled",
    unit="{task}",
    description="Executions the worker had taken, stopped by cancel()",
)
duration = meter.create_histogram(
    "shadows.task.duration",
    unit="s",
    description="How long runs took",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
punctuality = meter.create_histogram(
    "shadows.task.punctuality",
    unit="s",
    description="How late runs started after their scheduled time",
    explicit_bucket_boundaries_advisory=list(PUNCTUALITY_BUCKETS),
)
disruptions = meter.create_counter(
    "shadows.redis.disruptions", unit="{disruption}", description="Times Redis was lost"
)
