"""Task behaviours: retries, timeouts, perpetual and cron tasks."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conftest import wait_for
from shadows import (
    Cron,
    CurrentExecution,
    Execution,
    ExponentialRetry,
    Perpetual,
    Retry,
    Shadow,
    Timeout,
    Worker,
)
from shadows.core.execution import from_ms

FAST = timedelta(milliseconds=10)


def worker(shadow: Shadow, **options: Any) -> Worker:
    return Worker(shadow, scheduling_resolution=FAST, **options)


async def test_retry_forever_until_capped(shadow: Shadow) -> None:
    attempts: list[int] = []

    async def stubborn(retry: Retry = Retry(attempts=None)) -> None:
        attempts.append(retry.attempt)
        raise RuntimeError("again")

    await shadow.add(stubborn, key="forever")()
    async with worker(shadow) as w:
        await w.run_at_most({"forever": 7})
    assert attempts == [1, 2, 3, 4, 5, 6, 7]


async def test_exponential_retry_doubles_from_the_minimum_to_the_maximum(
    shadow: Shadow,
) -> None:
    stamps: list[tuple[int, float]] = []

    async def flaky(
        retry: ExponentialRetry = ExponentialRetry(
            attempts=5,
            minimum_delay=timedelta(milliseconds=50),
            maximum_delay=timedelta(milliseconds=200),
        ),
    ) -> None:
        stamps.append((retry.attempt, time.monotonic()))
        raise RuntimeError("no")

    await shadow.add(flaky, key="exp")()
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert [a for a, _ in stamps] == [1, 2, 3, 4, 5]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(stamps)]
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2, 0.2], strict=True):
        assert expected - 0.005 <= gap <= expected + 0.25, gaps
    assert await shadow.task_state("exp") == "failed"


def test_exponential_delays_are_computed_exactly() -> None:
    retry = ExponentialRetry(
        attempts=None, minimum_delay=timedelta(seconds=1), maximum_delay=timedelta(minutes=1)
    )
    delays = [retry.delay_after(n).total_seconds() for n in range(1, 9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert retry.delay_after(500) == timedelta(minutes=1)


def test_retry_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="delay"):
        Retry(delay=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="maximum_delay"):
        ExponentialRetry(minimum_delay=timedelta(seconds=5), maximum_delay=timedelta(seconds=1))


async def test_a_timed_out_task_is_cancelled_failed_and_retried(shadow: Shadow) -> None:
    attempts: list[int] = []
    finished: list[int] = []

    async def slow(
        timeout: Timeout = Timeout(timedelta(milliseconds=100)),
        retry: Retry = Retry(attempts=2),
    ) -> None:
        attempts.append(retry.attempt)
        await asyncio.sleep(5)
        finished.append(retry.attempt)

    await shadow.add(slow, key="too-slow")()
    started = time.monotonic()
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert attempts == [1, 2]
    assert finished == []
    assert time.monotonic() - started < 4
    assert await shadow.task_state("too-slow") == "failed"


async def test_timeout_extend_pushes_the_deadline(shadow: Shadow) -> None:
    seen: dict[str, Any] = {}

    async def careful(timeout: Timeout = Timeout(timedelta(milliseconds=200))) -> None:
        await asyncio.sleep(0.1)
        seen["before"] = timeout.remaining()
        timeout.extend()  # +200 ms
        timeout.extend(by=timedelta(milliseconds=100))
        seen["after"] = timeout.remaining()
        await asyncio.sleep(0.3)  # past the original deadline
        seen["done"] = True

    await shadow.add(careful, key="extended")()
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert seen["done"] is True
    assert seen["before"] < timedelta(milliseconds=110)
    assert seen["after"] > timedelta(milliseconds=350)
    assert await shadow.task_state("extended") == "completed"


def test_timeout_outside_a_worker() -> None:
    timeout = Timeout(timedelta(seconds=2))
    assert timeout.remaining() == timedelta(seconds=2)
    timeout.extend()
    assert timeout.remaining() == timedelta(seconds=4)
    with pytest.raises(ValueError, match="positive"):
        Timeout(timedelta(0))


async def test_perpetual_runs_again_after_success_and_failure(shadow: Shadow) -> None:
    runs: list[int] = []

    async def heartbeat(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=20))) -> None:
        runs.append(len(runs) + 1)
        if len(runs) % 2 == 0:
            raise RuntimeError("every other run fails")

    await shadow.add(heartbeat, key="beat")()
    async with worker(shadow) as w:
        await w.run_at_most({"beat": 5})
    assert runs == [1, 2, 3, 4, 5]


async def test_perpetual_keeps_its_cadence(shadow: Shadow) -> None:
    due: list[datetime] = []
    lateness: list[float] = []

    async def tick(
        execution: Execution = CurrentExecution(),
        perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=100)),
    ) -> None:
        due.append(execution.when)
        lateness.append((datetime.now(timezone.utc) - execution.when).total_seconds())

    await shadow.add(tick, key="tick")()
    async with worker(shadow) as w:
        await w.run_at_most({"tick": 4})
    steps = [(b - a).total_seconds() for a, b in itertools.pairwise(due)]
    # A run that starts on time schedules the next one exactly `every` after its own due
    # time; one that starts late (a loaded machine) never brings the next one closer.
    for step, late in zip(steps, lateness, strict=False):
        if late < 0.02:
            assert abs(step - 0.1) < 0.002, (steps, lateness)
        else:
            assert step > 0.098, (steps, lateness)


async def test_perpetual_cancel_perpetuate_and_every(shadow: Shadow) -> None:
    seen: list[tuple[int, float]] = []

    async def countdown(n: int, perpetual: Perpetual = Perpetual(every=timedelta(hours=1))) -> None:
        seen.append((n, perpetual.every.total_seconds()))
        if n == 0:
            perpetual.cancel()
            return
        perpetual.every = timedelta(milliseconds=10)
        perpetual.perpetuate(n - 1)

    await shadow.add(countdown, key="countdown")(3)
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert [n for n, _ in seen] == [3, 2, 1, 0]
    assert seen[0][1] == 3600  # every starts from the declaration for each run
    assert await shadow.task_state("countdown") == "completed"
    assert await shadow.client.zcard(shadow.keys.queue) == 0


async def test_a_perpetual_task_is_retried_before_it_perpetuates(shadow: Shadow) -> None:
    attempts: list[int] = []

    async def flaky(
        retry: Retry = Retry(attempts=2),
        perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10)),
    ) -> None:
        attempts.append(retry.attempt)
        raise RuntimeError("always")

    await shadow.add(flaky, key="flaky-chain")()
    async with worker(shadow) as w:
        await w.run_at_most({"flaky-chain": 4})
    assert attempts == [1, 2, 1, 2]


async def test_an_automatic_task_is_started_once_by_three_workers_at_once(
    shadow: Shadow,
) -> None:
    runs: list[float] = []

    async def housekeeping(
        perpetual: Perpetual = Perpetual(every=timedelta(hours=1), automatic=True),
    ) -> None:
        runs.append(time.monotonic())

    shadow.register(housekeeping)
    workers = [worker(shadow, name=f"auto-{i}") for i in range(3)]
    runners = [asyncio.create_task(w.run_forever()) for w in workers]
    try:
        await wait_for(lambda: bool(runs), 5, "the automatic task to run")

        async def rescheduled() -> bool:
            # the next run of the single chain waits an hour in the queue
            return await shadow.task_state("housekeeping") == "scheduled"

        await wait_for(rescheduled, 5, "the chain to be rescheduled")
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*runners)
    assert len(runs) == 1
    assert await shadow.client.zrange(shadow.keys.queue, 0, -1) == [b"housekeeping"]


async def test_automatic_tasks_can_be_turned_off(shadow: Shadow) -> None:
    runs: list[str] = []

    async def housekeeping(
        perpetual: Perpetual = Perpetual(every=timedelta(hours=1), automatic=True),
    ) -> None:
        runs.append("ran")

    shadow.register(housekeeping)
    async with Worker(shadow, schedule_automatic_tasks=False) as w:
        await w.run_until_finished()
    assert runs == []
    assert await shadow.task_state("housekeeping") is None


async def test_cron_schedules_its_next_match(shadow: Shadow) -> None:
    runs: list[datetime] = []

    async def report(cron: Cron = Cron("*/5 * * * *")) -> None:
        runs.append(datetime.now(timezone.utc))

    await shadow.add(report, key="report")()
    async with worker(shadow) as w:
        await w.run_at_most({"report": 1})
    assert len(runs) == 1
    score = await shadow.client.zscore(shadow.keys.queue, "report")
    assert score is not None
    following = from_ms(int(score))
    assert following > runs[0]
    assert following.minute % 5 == 0
    assert following.second == 0
    assert following - runs[0] <= timedelta(minutes=5)


async def test_automatic_cron_starts_at_its_next_match(shadow: Shadow) -> None:
    async def nightly(cron: Cron = Cron("@daily", automatic=True)) -> None:
        pass

    shadow.register(nightly)
    async with Worker(shadow) as w:
        await w.run_at_most({"nightly": 0})
    score = await shadow.client.zscore(shadow.keys.queue, "nightly")
    assert score is not None
    first = from_ms(int(score))
    assert (first.hour, first.minute, first.second) == (0, 0, 0)


def test_cron_expressions_keywords_and_time_zones() -> None:
    paris = ZoneInfo("Europe/Paris")
    moment = datetime(2026, 3, 28, 12, 30, tzinfo=timezone.utc)
    assert Cron("@hourly").following(moment) == datetime(2026, 3, 28, 13, 0, tzinfo=timezone.utc)
    weekday = Cron("0 9 * * MON-FRI", tz=paris).following(moment)
    assert weekday == datetime(2026, 3, 30, 9, 0, tzinfo=paris)
    for keyword in ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight"):
        Cron(keyword)
    with pytest.raises(ValueError, match="Invalid cron expression"):
        Cron("every tuesday")
    with pytest.raises(ValueError, match="Invalid cron expression"):
        Cron("61 * * * *")


async def test_a_timeout_says_what_happened(shadow: Shadow) -> None:
    async def slow(timeout: Timeout = Timeout(timedelta(milliseconds=50))) -> None:
        await asyncio.sleep(5)

    await shadow.add(slow, key="slow")()
    async with worker(shadow) as w:
        await w.run_until_finished()
    letter = await shadow.failed_task("slow")
    assert letter is not None
    assert letter.error == "TimeoutError: slow exceeded its Timeout of 0:00:00.050000"


@pytest.mark.parametrize("every", [timedelta(0), timedelta(seconds=-1), 5])
def test_a_perpetual_task_needs_a_positive_interval(every: Any) -> None:
    with pytest.raises(ValueError, match=r"Perpetual\(every=\.\.\.\) must be a positive"):
        Perpetual(every=every)
    with pytest.raises(TypeError):
        Perpetual()  # type: ignore[call-arg]
    perpetual = Perpetual(every=timedelta(seconds=1))
    with pytest.raises(ValueError, match="must be a positive timedelta"):
        perpetual.every = every  # inside a task, too
    assert perpetual.every == timedelta(seconds=1)
    assert Cron("@hourly").every == timedelta(0)  # a cron has no interval, and is fine
