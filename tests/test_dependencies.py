"""Context dependencies, ``Depends`` and calling tasks directly."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Any

import pytest

from shadows import (
    CurrentExecution,
    CurrentShadow,
    CurrentWorker,
    Depends,
    Execution,
    Retry,
    Shadow,
    TaskArgument,
    TaskKey,
    TaskLogger,
    Timeout,
    Worker,
)
from shadows.behaviours import plan_for


async def run_all(shadow: Shadow) -> None:
    async with Worker(shadow) as worker:
        await worker.run_until_finished()


async def test_context_dependencies_hand_the_task_its_run(shadow: Shadow) -> None:
    seen: dict[str, Any] = {}

    async def inspect_me(
        value: int,
        shadows: Shadow = CurrentShadow(),
        worker: Worker = CurrentWorker(),
        execution: Execution = CurrentExecution(),
        key: str = TaskKey(),
    ) -> None:
        seen.update(shadows=shadows, worker=worker, execution=execution, key=key)

    await shadow.add(inspect_me, key="ctx-1")(7)
    async with Worker(shadow, name="ctx-worker") as worker:
        await worker.run_until_finished()
    assert seen["shadows"] is shadow
    assert seen["worker"] is worker
    assert seen["key"] == "ctx-1"
    assert seen["execution"].key == "ctx-1"
    assert seen["execution"].args == (7,)
    assert seen["execution"].attempt == 1


async def test_task_argument_by_parameter_name_explicit_name_and_optional(
    shadow: Shadow,
) -> None:
    seen: dict[str, Any] = {}

    async def by_name(customer_id: int = TaskArgument()) -> int:
        return customer_id * 10

    async def by_explicit(the_id: int = TaskArgument("customer_id")) -> int:
        return the_id + 1

    async def maybe(missing: str | None = TaskArgument(optional=True)) -> str | None:
        return missing

    async def task(
        customer_id: int,
        region: str = "eu",
        a: int = Depends(by_name),
        b: int = Depends(by_explicit),
        c: str | None = Depends(maybe),
        d: str = TaskArgument("region"),
    ) -> None:
        seen.update(a=a, b=b, c=c, d=d)

    await shadow.add(task)(4)
    await run_all(shadow)
    assert seen == {"a": 40, "b": 5, "c": None, "d": "eu"}


async def test_a_missing_task_argument_stops_the_task_and_names_it(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    async def needs(nothing_here: int = TaskArgument()) -> int:
        return nothing_here

    async def task(value: int = Depends(needs)) -> None:
        ran.append("body")

    await shadow.add(task, key="missing-arg")()
    with caplog.at_level(logging.ERROR, logger="shadows"):
        await run_all(shadow)
    assert ran == []
    assert "TaskArgument() for parameter 'nothing_here' failed" in caplog.text
    assert await shadow.task_state("missing-arg") == "failed"


async def test_task_logger_carries_the_run(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    async def chatty(log: logging.LoggerAdapter[logging.Logger] = TaskLogger()) -> None:
        log.info("hello from the task", extra={"customer": 3})

    await shadow.add(chatty, key="chatty-1")()
    with caplog.at_level(logging.INFO):
        async with Worker(shadow, name="logging-worker") as worker:
            await worker.run_until_finished()
    record = next(r for r in caplog.records if r.getMessage() == "hello from the task")
    assert record.name == "shadows.task.chatty"
    assert record.task == "chatty"  # type: ignore[attr-defined]
    assert record.key == "chatty-1"  # type: ignore[attr-defined]
    assert record.attempt == 1  # type: ignore[attr-defined]
    assert record.worker == "logging-worker"  # type: ignore[attr-defined]
    assert record.customer == 3  # type: ignore[attr-defined]


async def test_every_kind_of_factory_and_teardown_in_reverse_order(shadow: Shadow) -> None:
    events: list[str] = []

    def plain() -> str:
        events.append("plain")
        return "plain"

    async def coroutine() -> str:
        events.append("coroutine")
        return "coroutine"

    def generator() -> Iterator[str]:
        events.append("generator up")
        yield "generator"
        events.append("generator down")

    async def async_generator() -> AsyncIterator[str]:
        events.append("async generator up")
        yield "async generator"
        events.append("async generator down")

    @contextmanager
    def sync_manager() -> Iterator[str]:
        events.append("manager up")
        yield "manager"
        events.append("manager down")

    @asynccontextmanager
    async def async_manager() -> AsyncIterator[str]:
        events.append("async manager up")
        yield "async manager"
        events.append("async manager down")

    async def task(
        a: str = Depends(plain),
        b: str = Depends(coroutine),
        c: str = Depends(generator),
        d: str = Depends(async_generator),
        e: str = Depends(sync_manager),
        f: str = Depends(async_manager),
    ) -> None:
        events.append(f"body {a},{b},{c},{d},{e},{f}")

    await shadow.add(task)()
    await run_all(shadow)
    assert events == [
        "plain",
        "coroutine",
        "generator up",
        "async generator up",
        "manager up",
        "async manager up",
        "body plain,coroutine,generator,async generator,manager,async manager",
        "async manager down",
        "manager down",
        "async generator down",
        "generator down",
    ]


async def test_teardown_runs_and_sees_the_error_when_the_task_fails(shadow: Shadow) -> None:
    events: list[str] = []

    async def resource() -> AsyncIterator[str]:
        try:
            yield "resource"
        except ValueError as error:
            events.append(f"saw {error}")
            raise
        finally:
            events.append("closed")

    async def task(res: str = Depends(resource)) -> None:
        raise ValueError("task broke")

    await shadow.add(task, key="teardown-fail")()
    await run_all(shadow)
    assert events == ["saw task broke", "closed"]
    assert await shadow.task_state("teardown-fail") == "failed"


async def test_nested_dependencies_are_resolved_once_and_shared(shadow: Shadow) -> None:
    calls: list[str] = []

    async def connection(key: str = TaskKey()) -> str:
        calls.append("connection")
        return f"conn-for-{key}"

    async def repository(conn: str = Depends(connection)) -> str:
        calls.append("repository")
        return f"repo({conn})"

    seen: dict[str, str] = {}

    async def task(
        repo: str = Depends(repository),
        conn: str = Depends(connection),
        again: str = Depends(connection),
    ) -> None:
        seen.update(repo=repo, conn=conn, again=again)

    await shadow.add(task, key="nested")()
    await shadow.add(task, key="nested-2")()
    await run_all(shadow)
    assert calls == ["connection", "repository"] * 2
    assert seen["repo"] in ("repo(conn-for-nested)", "repo(conn-for-nested-2)")
    assert seen["conn"] == seen["again"]


async def test_a_failing_dependency_stops_the_body_and_is_named(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    torn_down: list[str] = []

    async def first() -> AsyncIterator[str]:
        try:
            yield "first"
        finally:
            torn_down.append("first")

    async def open_database() -> str:
        raise ConnectionRefusedError("database is down")

    async def task(a: str = Depends(first), db: str = Depends(open_database)) -> None:
        ran.append("body")

    await shadow.add(task, key="dep-fails")()
    with caplog.at_level(logging.ERROR, logger="shadows"):
        await run_all(shadow)
    assert ran == []
    assert torn_down == ["first"]
    assert (
        "dependency Depends('test_a_failing_dependency_stops_the_body_and_is_named.<locals>"
        ".open_database') for parameter 'db' failed: ConnectionRefusedError: database is down"
    ) in caplog.text


async def test_a_failing_dependency_is_retried_by_the_tasks_policy(shadow: Shadow) -> None:
    attempts: list[int] = []

    async def flaky_resource(execution: Execution = CurrentExecution()) -> str:
        attempts.append(execution.attempt)
        if execution.attempt < 3:
            raise OSError("not yet")
        return "ok"

    async def task(res: str = Depends(flaky_resource), retry: Retry = Retry(attempts=3)) -> None:
        pass

    await shadow.add(task, key="dep-retry")()
    await run_all(shadow)
    assert attempts == [1, 2, 3]
    assert await shadow.task_state("dep-retry") == "completed"


async def test_signatures_are_inspected_once_per_function(
    shadow: Shadow, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def helper(key: str = TaskKey()) -> str:
        return key

    async def task(n: int, h: str = Depends(helper), retry: Retry = Retry()) -> None:
        pass

    shadow.register(task)
    assert plan_for(task) is plan_for(task)
    await shadow.add(task)(0)  # first use: everything inspected
    await run_all(shadow)

    calls = 0
    original = inspect.signature

    def counting(*args: Any, **kwargs: Any) -> inspect.Signature:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting)
    for n in range(20):
        await shadow.add(task)(n)
    await run_all(shadow)
    assert calls == 0


async def test_tasks_stay_plain_functions_callable_directly() -> None:
    events: list[Any] = []

    async def resource() -> str:
        return "real"

    async def task(
        customer_id: int,
        db: str = Depends(resource),
        retry: Retry = Retry(attempts=3),
        timeout: Timeout = Timeout(timedelta(seconds=1)),
        key: str = TaskKey(),
    ) -> None:
        events.append((customer_id, db, retry.attempt, key))

    await task(5, db="fake-db", retry=Retry(attempts=1), key="unit-test")
    assert events == [(5, "fake-db", 1, "unit-test")]


def test_two_policies_of_one_kind_are_refused() -> None:
    from shadows import ExponentialRetry

    async def task(a: Retry = Retry(), b: Retry = ExponentialRetry()) -> None:
        pass

    with pytest.raises(ValueError, match="only one Retry"):
        Shadow(url="memory://refuse").register(task)


def test_depends_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="Depends"):
        Depends(42)  # type: ignore[call-overload]
