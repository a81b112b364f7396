"""The last hour, kept in the dashboard's memory: what the charts and the task table show.

Workers publish their counts so far in each heartbeat (their *tally*: started, succeeded,
failed, retried, stricken and the summed lateness of starts, per task). Counts start at
zero when a worker starts and vanish when it stops, so :class:`Totals` follows each worker
(by name and start time) and adds up only the differences between two of its readings:
totals that only grow, whatever workers come and go. :class:`History` keeps one sample of
those totals and of the depths per reading, and turns them into rates over a window a few
heartbeats long, so that heartbeats every two seconds still draw a smooth line.

Nothing is stored in Redis: a dashboard that restarts starts its charts afresh, and several
dashboards on one shadow each keep their own (identical) picture.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shadows.dashboard.pulse import Pulse, WorkerView
from shadows.operations.tally import TALLY_FIELDS

_WIDTH = len(TALLY_FIELDS)
_STARTED, _SUCCEEDED, _FAILED, _RETRIED, _STRICKEN, _LATENESS = range(_WIDTH)
#: A worker first seen this long after it started did its work before we looked.
_NEWCOMER_GRACE_MS = 10_000
#: How long a worker's last tally is remembered while it is not listed (an outage).
_FORGET_MS = 3_600_000
#: Per-task totals are remembered once a minute, for the "last hour" columns.
_CHECKPOINT_MS = 60_000


class Totals:
    """Every worker's counts since this dashboard began, per task; they only grow."""

    def __init__(self) -> None:
        self.by_task: dict[str, list[int]] = {}
        self._last: dict[tuple[str, int], tuple[int, Mapping[str, tuple[int, ...]]]] = {}
        self._previous_ms: int | None = None

    def absorb(self, workers: Iterable[WorkerView], now_ms: int) -> None:
        previous_ms = self._previous_ms
        for worker in workers:
            ident = (worker.name, worker.started_ms)
            known = self._last.get(ident)
            if known is not None:
                before = known[1]
            elif previous_ms is not None and worker.started_ms >= previous_ms - _NEWCOMER_GRACE_MS:
                before = {}  # started since our last reading: all it did is new
            else:
                before = worker.tally  # there before we looked: a baseline
            for task, counts in worker.tally.items():
                old = before.get(task)
                total = self.by_task.setdefault(task, [0] * _WIDTH)
                for i in range(_WIDTH):
                    total[i] += max(0, counts[i] - (old[i] if old else 0))
            self._last[ident] = (now_ms, worker.tally)
        for ident, (seen, _) in list(self._last.items()):
            if now_ms - seen > _FORGET_MS:
                del self._last[ident]
        self._previous_ms = now_ms

    def sums(self) -> list[int]:
        summed = [0] * _WIDTH
        for counts in self.by_task.values():
            for i in range(_WIDTH):
                summed[i] += counts[i]
        return summed


@dataclass(frozen=True, slots=True)
class Sample:
    taken_ms: int
    ready: int
    scheduled: int
    running: int
    #: The totals (:data:`TALLY_FIELDS`) of every task at that moment.
    totals: tuple[int, ...]


#: The columns of a chart point, in order.
POINT_FIELDS = (
    "t", "ready", "scheduled", "running", "started", "succeeded", "failed", "lateness",
)  # fmt: skip


class History:
    """Samples over the last ``span_ms``, and points for the charts."""

    def __init__(self, span_ms: int, interval_ms: int, window_ms: int) -> None:
        self.window_ms = window_ms
        self.samples: deque[Sample] = deque(maxlen=max(2, span_ms // interval_ms + 1))
        self.totals = Totals()
        self._checkpoints: deque[tuple[int, dict[str, tuple[int, ...]]]] = deque(
            maxlen=max(2, span_ms // _CHECKPOINT_MS + 1)
        )
        self.span_ms = span_ms

    def record(self, pulse: Pulse) -> Sample:
        now = pulse.taken_ms
        self.totals.absorb(pulse.workers, now)
        sample = Sample(
            now, pulse.ready, pulse.scheduled, pulse.running_count, tuple(self.totals.sums())
        )
        self.samples.append(sample)
        if not self._checkpoints or now - self._checkpoints[-1][0] >= _CHECKPOINT_MS:
            snapshot = {task: tuple(counts) for task, counts in self.totals.by_task.items()}
            self._checkpoints.append((now, snapshot))
        return sample

    def points(self) -> list[list[Any]]:
        """Every sample as a chart point (see :data:`POINT_FIELDS`)."""
        samples = list(self.samples)
        points = []
        start = 0
        for sample in samples:
            while samples[start].taken_ms < sample.taken_ms - self.window_ms:
                start += 1
            points.append(_point(samples[start], sample))
        return points

    def latest_point(self) -> list[Any] | None:
        if not self.samples:
            return None
        newest = self.samples[-1]
        oldest = newest
        for sample in reversed(self.samples):
            if sample.taken_ms < newest.taken_ms - self.window_ms:
                break
            oldest = sample
        return _point(oldest, newest)

    def per_task(self) -> tuple[int, dict[str, dict[str, int]]]:
        """Since when, and each task's counts since then (the oldest checkpoint kept)."""
        if not self._checkpoints:
            return 0, {}
        since, base = self._checkpoints[0]
        table: dict[str, dict[str, int]] = {}
        for task, counts in self.totals.by_task.items():
            old = base.get(task, (0,) * _WIDTH)
            table[task] = {
                name: counts[i] - old[i]
                for i, name in enumerate(TALLY_FIELDS)
                if name != "lateness_ms"
            }
        return since, table


def _point(before: Sample, after: Sample) -> list[Any]:
    seconds = (after.taken_ms - before.taken_ms) / 1000
    delta = [a - b for a, b in zip(after.totals, before.totals, strict=True)]

    def rate(count: int) -> float:
        return round(count / seconds, 3) if seconds > 0 else 0.0

    started = delta[_STARTED]
    lateness = round(delta[_LATENESS] / started / 1000, 4) if started > 0 else None
    return [
        after.taken_ms / 1000,
        after.ready,
        after.scheduled,
        after.running,
        rate(started),
        rate(delta[_SUCCEEDED]),
        rate(delta[_FAILED] + delta[_RETRIED]),
        lateness,
    ]
