"""``@shadow.task``: the typed handle, its options, key templates, and decorator
behaviours acting exactly like parameter defaults; on both backends."""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import AsyncMock

import pytest

from shadows import (
    ConcurrencyLimit,
    Cron,
    CurrentExecution,
    Execution,
    ExponentialRetry,
    Perpetual,
    Retry,
    Shadow,
    Task,
    Timeout,
    Worker,
)
from shadows.tasks import trace

FAST = {"minimum_check_interval": timedelta(milliseconds=20)}


@pytest.fixture
async def app(url: str, shadow_name: str) -> Any:
    async with Shadow(name=shadow_name, url=url) as opened:
        yield opened


async def test_schedule_runs_the_task_on_a_worker_and_returns_the_execution(app: Shadow) -> None:
    seen: list[tuple[int, str]] = []

    @app.task
    async def greet(customer_id: int, name: str) -> None:
        seen.append((customer_id, name))

    assert isinstance(greet, Task)
    execution = await greet.schedule(7, "Ann")
    assert isinstance(execution, Execution)
    assert execution.function_name == "greet"
    assert await app.task_state(execution.key) == "queued"
    async with Worker(app, **FAST) as worker:
        await worker.run_until_finished()
    assert seen == [(7, "Ann")]


async def test_calling_the_handle_runs_the_function_in_process(app: Shadow) -> None:
    @app.task(retry=Retry(attempts=3))
    async def double(value: int) -> int:
        return value * 2

    @app.task
    def shout(text: str) -> str:
        return text.upper()

    assert await double(21) == 42
    assert shout("hi") == "HI"
    assert await app.snapshot() is not None
    assert (await app.snapshot()).future == []  # nothing was scheduled


async def test_a_key_template_makes_the_second_schedule_a_no_op(app: Shadow) -> None:
    runs: list[str] = []

    @app.task(key="welcome-{customer_id}")
    async def welcome(customer_id: int, name: str = "friend") -> None:
        runs.append(name)

    first = await welcome.schedule(42, "Carol")
    second = await welcome.schedule(42, name="Dave")
    assert first.key == second.key == "welcome-42"
    async with Worker(app, **FAST) as worker:
        await worker.run_until_finished()
    assert runs == ["Carol"]


async def test_a_template_sees_defaults_and_attributes(app: Shadow) -> None:
    class Order:
        id = "A-1"

    @app.task(key="{order.id}-{region}")
    async def ship(order: Any, region: str = "eu") -> None: ...

    execution = await ship.schedule(Order())
    assert execution.key == "A-1-eu"


async def test_a_key_function_takes_the_task_arguments(app: Shadow) -> None:
    @app.task(key=lambda customer_id, name: f"c{customer_id}:{name.lower()}")
    async def welcome(customer_id: int, name: str) -> None: ...

    assert (await welcome.schedule(3, "Eve")).key == "c3:eve"


def test_a_template_naming_no_parameter_fails_at_decoration(url: str) -> None:
    shadow = Shadow(url=url)
    with pytest.raises(ValueError) as raised:

        @shadow.task(key="welcome-{customer}")
        async def send_welcome_email(customer_id: int, name: str) -> None: ...

    message = str(raised.value)
    for fragment in ("send_welcome_email", "'customer'", "customer_id, name", "'customer_id'"):
        assert fragment in message


async def test_options_schedule_later_or_under_another_key(app: Shadow) -> None:
    @app.task(key="report-{day}")
    async def report(day: str, when: str = "", key: str = "", delay: int = 0) -> None: ...

    later = datetime.now(UTC) + timedelta(hours=1)
    at = await report.options(when=later).schedule("mon", when="x", key="y", delay=3)
    assert at.key == "report-mon"
    assert await app.task_state("report-mon") == "scheduled"
    soon = await report.options(delay=timedelta(minutes=5), key="custom").schedule("tue")
    assert soon.key == "custom"
    assert soon.when > datetime.now(UTC) + timedelta(minutes=4)
    assert soon.kwargs == {} and soon.args == ("tue",)


async def test_options_replace_swaps_the_arguments_of_a_scheduled_task(app: Shadow) -> None:
    seen: list[str] = []

    @app.task(key="digest")
    async def digest(text: str) -> None:
        seen.append(text)

    later = datetime.now(UTC) + timedelta(hours=1)
    await digest.options(when=later).schedule("old")
    await digest.replace("new")  # due now, same key
    async with Worker(app, **FAST) as worker:
        await worker.run_until_finished()
    assert seen == ["new"]


def test_options_refuse_when_and_delay_together(url: str) -> None:
    shadow = Shadow(url=url)

    @shadow.task
    async def job() -> None: ...

    with pytest.raises(ValueError, match="when or delay, not both"):
        job.options(when=datetime.now(UTC), delay=timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        job.options(when=datetime(2030, 1, 1))


async def test_replace_without_a_key_is_a_clear_error(app: Shadow) -> None:
    @app.task
    async def job() -> None: ...

    with pytest.raises(ValueError, match="needs a key"):
        await job.replace()


async def test_bad_arguments_fail_at_schedule_time(app: Shadow) -> None:
    @app.task
    async def job(a: int) -> None: ...

    with pytest.raises(TypeError, match="job"):
        await job.schedule(1, 2)  # type: ignore[call-arg]
    assert (await app.snapshot()).future == []


async def test_decorator_retry_acts_like_a_parameter_default(app: Shadow) -> None:
    tries: list[int] = []

    @app.task(retry=Retry(attempts=3))
    async def flaky(execution: Execution = CurrentExecution()) -> None:
        tries.append(execution.attempt)
        raise RuntimeError("no")

    await flaky.schedule()
    async with Worker(app, **FAST) as worker:
        await worker.run_until_finished()
    assert tries == [1, 2, 3]
    assert len(await app.failed()) == 1


async def test_decorator_timeout_cancels_the_run(app: Shadow) -> None:
    @app.task(timeout=Timeout(timedelta(milliseconds=50)))
    async def slow() -> None:
        await asyncio.sleep(10)

    execution = await slow.schedule()
    async with Worker(app, **FAST) as worker:
        await worker.run_until_finished()
    [letter] = await app.failed()
    assert letter.key == execution.key
    assert "Timeout" in letter.error


async def test_decorator_perpetual_and_automatic_cron(app: Shadow) -> None:
    beats: list[int] = []

    @app.task(perpetual=Perpetual(every=timedelta(milliseconds=10), automatic=True))
    async def beat() -> None:
        beats.append(1)

    @app.task(perpetual=Cron("@yearly", automatic=True))
    async def yearly() -> None: ...

    async with Worker(app, **FAST) as worker:
        await worker.run_at_most({beat: 3, yearly: 0})
    assert len(beats) == 3
    assert await app.task_state("yearly") == "scheduled"


async def test_decorator_concurrency_limits_runs(app: Shadow) -> None:
    running: list[int] = []
    peak: list[int] = []

    @app.task(concurrency=ConcurrencyLimit(max_concurrent=1))
    async def single(n: int) -> None:
        running.append(n)
        peak.append(len(running))
        await asyncio.sleep(0.02)
        running.remove(n)

    for n in range(4):
        await single.schedule(n)
    async with Worker(app, concurrency=4, **FAST) as worker:
        await worker.run_until_finished()
    assert len(peak) == 4 and max(peak) == 1


def test_declaring_a_behaviour_twice_is_an_error(url: str) -> None:
    shadow = Shadow(url=url)
    with pytest.raises(ValueError, match="declared twice") as raised:

        @shadow.task(retry=ExponentialRetry(attempts=2))
        async def job(retry: Retry = Retry(attempts=5)) -> None: ...

    assert "'retry'" in str(raised.value)

    async def plain() -> None: ...

    with pytest.raises(TypeError, match="timeout= takes a Timeout"):
        shadow.task(timeout=timedelta(seconds=1))(plain)  # type: ignore[arg-type]


def test_two_functions_under_one_name_is_an_error(url: str) -> None:
    shadow = Shadow(url=url)

    @shadow.task
    async def send() -> None: ...

    shadow.task(send.function)  # the same function again is harmless
    shadow.register(send)
    with pytest.raises(ValueError, match="Two different tasks named 'send'"):

        @shadow.task(name="send")
        async def other() -> None: ...

    async def another() -> None: ...

    another.__name__ = "send"
    with pytest.raises(ValueError, match="Two different tasks named 'send'"):
        shadow.register(another)


async def test_a_bound_method_equal_to_the_registered_one_is_the_same_task(app: Shadow) -> None:
    class Mailer:
        async def deliver(self, to: str) -> None: ...

    mailer = Mailer()
    app.register(mailer.deliver)
    app.register(mailer.deliver)  # a new, equal, bound method object
    await app.add(mailer.deliver)("x")
    assert app.tasks["deliver"] == mailer.deliver


async def test_a_task_named_like_a_built_in_replaces_it(
    app: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    with caplog.at_level(logging.DEBUG, logger="shadows.shadow"):

        @app.task
        async def trace(message: str) -> None:
            ran.append(message)

    assert "replaces the built-in task trace" in caplog.text

    assert app.tasks["trace"] is trace
    app.register_collection("shadows.tasks:standard_tasks")  # the built-in never comes back
    assert app.tasks["trace"] is trace
    await app.add("trace")("mine")
    async with Worker(app, **FAST) as worker:
        await worker.run_until_finished()
    assert ran == ["mine"]


async def test_a_handle_is_accepted_wherever_a_function_is(app: Shadow) -> None:
    @app.task(name="named")
    async def job(customer_id: int) -> None: ...

    assert job.name == "named" and app.tasks["named"] is job
    assert (await app.add(job, key="k1")(1)).function_name == "named"
    await app.replace(job, None, "k1")(2)
    assert await app.strike(job, "customer_id", "==", 3)
    assert [str(s) for s in await app.strikes()] == ["named(customer_id == 3)"]
    assert await app.task_workers(job) == []
    other = Shadow(name=app.name, url=app.url)
    other.register(job)
    assert other.tasks["named"] is job


async def test_partials_callable_objects_and_mocks_can_be_decorated(app: Shadow) -> None:
    seen: list[Any] = []

    async def base(prefix: str, value: int) -> None:
        seen.append((prefix, value))

    class Callable:
        async def __call__(self, value: int) -> None:
            seen.append(("object", value))

    partial = app.task(name="partial")(functools.partial(base, "p"))
    instance = app.task(Callable())
    mock = AsyncMock()
    mock.__name__ = "mocked"
    mocked = app.task(mock)
    await partial.schedule(1)
    await instance.schedule(2)
    await mocked.schedule(3)
    async with Worker(app, **FAST) as worker:
        await worker.run_until_finished()
    assert sorted(seen, key=str) == [("object", 2), ("p", 1)]
    mock.assert_awaited_once_with(3)


async def test_a_module_level_shadow_works_across_event_loops(url: str, shadow_name: str) -> None:
    shadow = Shadow(name=shadow_name, url=url)  # no loop needed to make it

    @shadow.task(key="k")
    async def job() -> None: ...

    async def schedule() -> str | None:
        await job.schedule()
        return await shadow.task_state("k")

    await schedule()
    # A fresh loop in a thread stands for the next test's loop.
    state = await asyncio.to_thread(lambda: asyncio.run(schedule()))
    assert state == "queued"  # the same task, seen from the other loop: same server
    assert await shadow.task_state("k") == "queued"  # and back on this loop
    await shadow.aclose()


def test_the_decorator_keeps_the_function_metadata(url: str) -> None:
    shadow = Shadow(url=url)

    @shadow.task
    async def documented(a: int) -> None:
        """Docs."""

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docs."
    assert repr(documented).startswith("<Task documented on Shadow(")
    assert trace.__name__ == "trace"
