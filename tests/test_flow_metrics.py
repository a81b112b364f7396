"""The counters of flow control and cancellation (runs dropped, postponed, cancelled;
submissions debounced), read from the Prometheus endpoint and the OpenTelemetry SDK
after real runs, on real Redis and memory://."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conftest import wait_for
from http_get import families, get, scrape
from shadows import (
    Cooldown,
    Debounce,
    ExecutionCancelled,
    RateLimit,
    Shadow,
    Worker,
)
from shadows.core.execution import Message
from shadows.operations.metrics import WorkerMetrics

HOUR = timedelta(hours=1)
FAST = timedelta(milliseconds=10)


def otel_total(reader: InMemoryMetricReader, name: str, shadow: str, task: str) -> Any:
    data = reader.get_metrics_data()
    assert data is not None
    return sum(
        point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
        if point.attributes.get("shadows.shadow") == shadow
        and point.attributes.get("shadows.task") == task
    )


async def test_dropped_postponed_debounced_and_cancelled_runs_are_counted(
    shadow: Shadow, metric_reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    started = asyncio.Event()

    @shadow.task(cooldown=Cooldown(HOUR))
    async def cooled() -> None:
        ran.append("cooled")

    @shadow.task(rate_limit=RateLimit(1, HOUR, drop=True))
    async def capped() -> None:
        ran.append("capped")

    @shadow.task(rate_limit=RateLimit(2, per=timedelta(milliseconds=200)))
    async def paced(n: int) -> None:
        ran.append("paced")

    @shadow.task(debounce=Debounce(timedelta(milliseconds=50), max_wait=HOUR))
    async def settled(n: int) -> None:
        ran.append(f"settled {n}")

    @shadow.task
    async def held() -> None:
        started.set()
        await asyncio.sleep(3600)

    dropped_keys = []
    for _ in range(3):
        dropped_keys.append((await shadow.add(cooled)()).key)
        dropped_keys.append((await shadow.add(capped)()).key)
    for n in range(5):
        await shadow.add(paced)(n)
    burst = {(await shadow.add(settled)(n)).key for n in range(4)}
    assert len(burst) == 1  # one run: 3 of the 4 submissions were folded into it

    with caplog.at_level(logging.INFO, logger="shadows.worker"):
        async with Worker(
            shadow, name="counted", metrics_port=0, scheduling_resolution=FAST
        ) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 60)
            execution = await shadow.add(held, key="held")()
            running = asyncio.create_task(worker.run_forever())
            await asyncio.wait_for(started.wait(), 10)
            assert await shadow.cancel("held")
            with pytest.raises(ExecutionCancelled):
                await execution.get_result(timeout=10)
            await wait_for(lambda: worker.metrics.task("held").cancelled == 1)
            assert worker.metrics_port is not None
            samples = await scrape(worker.metrics_port)
            _, _, body = await asyncio.to_thread(
                get, f"http://127.0.0.1:{worker.metrics_port}/metrics"
            )
            worker.stop()
            await running

    def value(name: str, task: str) -> float:
        labels: dict[str, str] = {"shadow": shadow.name, "task": task}
        if name not in ("shadows_tasks_added_total", "shadows_tasks_debounced_total"):
            labels["worker"] = "counted"
        return samples[(name, frozenset(labels.items()))]

    # What Redis recorded, and what the runs did, agree with the counters.
    assert sorted(ran) == ["capped", "cooled", *["paced"] * 5, "settled 3"]
    recorded = [await shadow.task_state(key) for key in dropped_keys]
    assert recorded.count("dropped") == 4 and recorded.count("completed") == 2
    postponements = [
        record
        for record in caplog.records
        if getattr(record, "outcome", None) == "postponed" and record.task == "paced"
    ]
    assert len(postponements) >= 3  # 5 runs, at most 2 per 200 ms
    assert await shadow.task_state("held") == "cancelled"

    expected = {
        ("shadows_tasks_dropped_total", "cooled"): 2,
        ("shadows_tasks_dropped_total", "capped"): 2,
        ("shadows_tasks_dropped_total", "paced"): 0,
        ("shadows_tasks_postponed_total", "paced"): len(postponements),
        ("shadows_tasks_postponed_total", "cooled"): 0,
        ("shadows_tasks_succeeded_total", "paced"): 5,
        ("shadows_tasks_debounced_total", "settled"): 3,
        ("shadows_tasks_added_total", "settled"): 1,
        ("shadows_tasks_started_total", "settled"): 1,
        ("shadows_tasks_cancelled_total", "held"): 1,
        ("shadows_tasks_started_total", "held"): 1,
        ("shadows_tasks_running", "held"): 0,
    }
    assert {key: value(*key) for key in expected} == expected
    declared = families(body)
    for name in ("dropped", "postponed", "cancelled", "debounced"):
        assert declared[f"shadows_tasks_{name}"] == "counter"

    # The same numbers through the OpenTelemetry metrics API.
    otel = {
        ("shadows.tasks.dropped", "cooled"): 2,
        ("shadows.tasks.dropped", "capped"): 2,
        ("shadows.tasks.postponed", "paced"): len(postponements),
        ("shadows.tasks.debounced", "settled"): 3,
        ("shadows.tasks.added", "settled"): 1,
        ("shadows.tasks.cancelled", "held"): 1,
    }
    assert {key: otel_total(metric_reader, key[0], shadow.name, key[1]) for key in otel} == otel


def test_flow_outcomes_are_counted_where_the_worker_settles_them() -> None:
    class Named:
        name = "flow-classification"

    metrics = WorkerMetrics(Named(), "w")  # type: ignore[arg-type]
    message = Message("k", "job", 0, 1, b"", b"")
    for outcome in ("dropped", "dropped", "postponed", "cancelled", "skipped"):
        metrics.finished(message, outcome, None)
    series = metrics.task("job")
    assert (series.dropped, series.postponed, series.cancelled) == (2, 1, 1)
    assert (series.succeeded, series.failed, series.retried, series.stricken) == (0, 0, 0, 0)
