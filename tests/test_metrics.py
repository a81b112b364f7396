"""Prometheus metrics, scraped over HTTP from a worker's metrics port after a known
workload."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import wait_for
from http_get import families, get, health, scrape
from shadows import Retry, Shadow, Worker
from shadows.core.execution import Message
from shadows.operations.metrics import WorkerMetrics

SPEC_NAMES = {
    "shadows_tasks_added": "counter",
    "shadows_tasks_started": "counter",
    "shadows_tasks_succeeded": "counter",
    "shadows_tasks_failed": "counter",
    "shadows_tasks_retried": "counter",
    "shadows_tasks_stricken": "counter",
    "shadows_task_duration": "histogram",
    "shadows_task_punctuality": "histogram",
    "shadows_queue_depth": "gauge",
    "shadows_schedule_depth": "gauge",
    "shadows_tasks_running": "gauge",
    "shadows_redis_disruptions": "counter",
    "shadows_strikes_in_effect": "gauge",
}


def labels(**values: str) -> frozenset[Any]:
    return frozenset(values.items())


async def succeed() -> None:
    pass


async def explode() -> None:
    raise RuntimeError("explode")


async def nap(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def doomed() -> None:
    raise AssertionError("a stricken task must not run")


async def test_every_metric_with_its_value_after_a_known_workload(shadow: Shadow) -> None:
    tries: list[int] = []
    release, holding = asyncio.Event(), asyncio.Event()

    async def flaky(retry: Retry = Retry(attempts=3)) -> None:
        tries.append(retry.attempt)
        if retry.attempt < 3:
            raise ValueError("not yet")

    async def hold() -> None:
        holding.set()
        await release.wait()

    for _ in range(3):
        await shadow.add(succeed)()
    await shadow.add(succeed, key="same")()
    await shadow.add(succeed, key="same")()  # a no-op: the key is taken
    await shadow.add(explode)()
    await shadow.add(explode)()
    await shadow.add(flaky)()
    await shadow.add(nap)(0.05)
    await shadow.add(nap, when=datetime.now(UTC) - timedelta(seconds=10))(0)
    await shadow.strike(doomed)
    await shadow.strike(nap, "seconds", ">", 100)
    await shadow.add(doomed)()
    await shadow.add(doomed)()

    async with Worker(shadow, name="w1", metrics_port=0) as worker:
        await worker.run_until_finished()
        # Now some work that stays: 2 future tasks, and 1 running.
        for hours in (1, 2):
            await shadow.add(succeed, when=datetime.now(UTC) + timedelta(hours=hours))()
        await shadow.add(hold)()
        running = asyncio.create_task(worker.run_forever())
        # Its body, not just its dispatch (running_count counts that): the running gauge
        # goes up once the task's run has begun, after its strikes and dependencies.
        await asyncio.wait_for(holding.wait(), 10)
        port = worker.metrics_port
        assert port is not None
        samples = await scrape(port)
        release.set()
        worker.stop()
        await running

    def value(name: str, task: str | None = None, **extra: str) -> float:
        keys: dict[str, str] = {"shadow": shadow.name, **extra}
        if task is not None:
            keys["task"] = task
        if "worker" not in keys and not name.startswith(
            ("shadows_tasks_added", "shadows_queue", "shadows_schedule")
        ):
            keys["worker"] = "w1"
        return samples[(name, labels(**keys))]

    assert value("shadows_tasks_added_total", "succeed") == 3 + 1 + 2
    assert value("shadows_tasks_added_total", "explode") == 2
    assert value("shadows_tasks_started_total", "succeed") == 4
    assert value("shadows_tasks_succeeded_total", "succeed") == 4
    assert value("shadows_tasks_started_total", "explode") == 2
    assert value("shadows_tasks_failed_total", "explode") == 2
    assert value("shadows_tasks_succeeded_total", "explode") == 0
    assert tries == [1, 2, 3]
    assert value("shadows_tasks_started_total", "flaky") == 3
    assert value("shadows_tasks_retried_total", "flaky") == 2
    assert value("shadows_tasks_succeeded_total", "flaky") == 1
    assert value("shadows_tasks_failed_total", "flaky") == 0
    assert value("shadows_tasks_stricken_total", "succeed") == 0
    assert value("shadows_tasks_stricken_total", "doomed") == 2
    assert value("shadows_tasks_started_total", "doomed") == 0

    assert value("shadows_task_duration_count", "nap") == 2
    assert value("shadows_task_duration_sum", "nap") >= 0.05
    assert value("shadows_task_duration_count", "succeed") == 4
    # The nap scheduled 10 s in the past started at least 10 s late.
    assert value("shadows_task_punctuality_count", "nap") == 2
    assert value("shadows_task_punctuality_sum", "nap") >= 10
    assert value("shadows_task_punctuality_bucket", "nap", le="5.0") == 1
    assert value("shadows_task_punctuality_bucket", "nap", le="+Inf") == 2

    assert value("shadows_tasks_running", "hold") == 1
    assert value("shadows_tasks_running", "succeed") == 0
    assert value("shadows_queue_depth") == 0
    assert value("shadows_schedule_depth") == 2
    assert value("shadows_strikes_in_effect") == 2
    assert value("shadows_redis_disruptions_total") == 0


async def test_queue_depth_counts_ready_tasks_not_yet_taken(shadow: Shadow) -> None:
    async with Worker(shadow, metrics_port=0) as worker:
        await shadow.ensure_group()
        for _ in range(5):
            await shadow.add(succeed)()
        await shadow.add(succeed, when=datetime.now(UTC) + timedelta(hours=1))()
        assert worker.metrics_port is not None
        samples = await scrape(worker.metrics_port)
    assert samples[("shadows_queue_depth", labels(shadow=shadow.name))] == 5
    assert samples[("shadows_schedule_depth", labels(shadow=shadow.name))] == 1


async def test_the_endpoint_declares_every_spec_name_with_its_type(shadow: Shadow) -> None:
    await shadow.add(succeed)()
    async with Worker(shadow, metrics_port=0) as worker:
        await worker.run_until_finished()
        status, content_type, body = await asyncio.to_thread(
            get, f"http://127.0.0.1:{worker.metrics_port}/metrics"
        )
    assert status == 200
    assert content_type.startswith("text/plain")
    declared = families(body)
    for name, kind in SPEC_NAMES.items():
        assert declared.get(name) == kind, name
    # The process metrics of prometheus_client's default registry come along.
    assert "process_cpu_seconds" in declared or "python_info" in declared


async def test_openmetrics_when_asked(shadow: Shadow) -> None:
    async with Worker(shadow, metrics_port=0) as worker:
        status, content_type, body = await asyncio.to_thread(
            get,
            f"http://127.0.0.1:{worker.metrics_port}/metrics",
            "application/openmetrics-text; version=1.0.0",
        )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


async def test_health_and_metrics_can_share_a_port(shadow: Shadow) -> None:
    from redis_server import free_port

    port = free_port()
    async with Worker(shadow, healthcheck_port=port, metrics_port=port) as worker:
        running = asyncio.create_task(worker.run_forever())
        await wait_for(lambda: worker.is_running)
        status, body = await health(port)
        samples = await scrape(port, "/metrics")
        worker.stop()
        await running
    assert status == 200, body
    assert body["status"] == "ok"
    assert ("shadows_queue_depth", labels(shadow=shadow.name)) in samples


async def test_a_redis_outage_counts_as_one_disruption(shadow_name: str) -> None:
    from redis_server import RedisProcess

    with RedisProcess() as server:
        async with (
            Shadow(name=shadow_name, url=server.url) as shadow,
            Worker(
                shadow, metrics_port=0, reconnection_delay=timedelta(milliseconds=100)
            ) as worker,
        ):
            running = asyncio.create_task(worker.run_forever())
            await wait_for(lambda: worker.health.last_read is not None)
            server.stop()
            await wait_for(lambda: worker.health.last_error is not None)
            server.start()
            await shadow.add(succeed)()
            await wait_for(
                lambda: (
                    "succeed" in worker.metrics.series
                    and worker.metrics.series["succeed"].succeeded == 1
                ),
                30,
                "the task to run",
            )
            assert worker.metrics_port is not None
            samples = await scrape(worker.metrics_port)
            worker.stop()
            await running
    disruptions = samples[
        ("shadows_redis_disruptions_total", labels(shadow=shadow_name, worker=worker.name))
    ]
    assert disruptions >= 1


def test_outcomes_are_classified_where_the_worker_reports_them() -> None:
    class Named:
        name = "classification"

    metrics = WorkerMetrics(Named(), "w")  # type: ignore[arg-type]
    first = Message("k", "job", 0, 1, b"", b"")
    retry = Message("k", "job", 0, 2, b"", b"")
    chained = Message("k", "job", 0, 1, b"", b"")
    metrics.finished(first, "completed", None)
    metrics.finished(first, "completed", chained)  # perpetual: not a retry
    metrics.finished(first, "failed", retry)
    metrics.finished(retry, "failed", chained)  # perpetual after a final failure
    metrics.finished(retry, "failed", None)
    metrics.finished(first, "stricken", None)
    series = metrics.task("job")
    assert (series.succeeded, series.retried, series.failed, series.stricken) == (2, 1, 2, 1)
