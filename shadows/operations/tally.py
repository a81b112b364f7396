"""A worker's tally: its counts so far, per task, published with each heartbeat.

Counters that start at zero with the worker and only grow: a reader (the dashboard) turns
the differences between two heartbeats into throughput, however many workers come and go.
The form is JSON, ``{task: [started, succeeded, failed, retried, stricken, lateness_ms]}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: The numbers of a task's entry, in order: runs started, runs that completed, tasks that
#: failed for good, runs that failed and were retried, calls stricken, and the lateness of
#: the starts added up (ms).
TALLY_FIELDS = ("started", "succeeded", "failed", "retried", "stricken", "lateness_ms")


def encode_tally(series: Mapping[str, Any]) -> str:
    """The tally of a worker's per-task metrics (``WorkerMetrics.series``)."""
    return json.dumps(
        {
            name: [
                s.started,
                s.succeeded,
                s.failed,
                s.retried,
                s.stricken,
                round(s.punctuality.total * 1000),
            ]
            for name, s in list(series.items())
        },
        separators=(",", ":"),
    )


def parse_tally(text: str) -> dict[str, tuple[int, ...]]:
    """A tally, or nothing when there is none (older workers) or it is garbled."""
    if not text:
        return {}
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    width = len(TALLY_FIELDS)
    tally: dict[str, tuple[int, ...]] = {}
    for task, counts in document.items():
        if isinstance(counts, list) and all(isinstance(c, int) for c in counts):
            tally[str(task)] = tuple((counts + [0] * width)[:width])
    return tally
