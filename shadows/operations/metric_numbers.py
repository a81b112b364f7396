"""The plain numbers a worker keeps per task: counters and histogram buckets.

Touched only from the worker's event loop, so no locks and no label look-ups; they are
turned into Prometheus families (``metric_families``) only when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping

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

#: The per-task numbers reported as they are (counters, and the running gauge), by the
#: name they share in :class:`Series` and the Prometheus families.
PER_TASK = (
    "started",
    "succeeded",
    "failed",
    "retried",
    "stricken",
    "handed_back",
    "dropped",
    "postponed",
    "cancelled",
    "running",
)


class Histogram:
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


class Series:
    """The numbers of one task on one worker."""

    __slots__ = ("attributes", "duration", "punctuality", *PER_TASK)

    def __init__(self, attributes: Mapping[str, str]) -> None:
        self.attributes = attributes
        self.started = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.stricken = 0
        self.handed_back = 0
        self.dropped = 0
        self.postponed = 0
        self.cancelled = 0
        self.running = 0
        self.duration = Histogram(DURATION_BUCKETS)
        self.punctuality = Histogram(PUNCTUALITY_BUCKETS)
