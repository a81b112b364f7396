"""The worker's own failures end the message they concern, never the worker; tasks of
every callable shape run, log and render like functions."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Annotated, Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from shadows import ConcurrencyLimit, Logged, Retry, Shadow, Worker
from shadows.core.execution import Execution, Message
from shadows.operations import instrumentation
from shadows.operations.metrics import WorkerMetrics
from shadows.worker import runner
from shadows.worker.completions import Completions
from shadows.worker.runner import Runner

VICTIM = "victim"


def _mentions_victim(values: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    for value in (*values, *kwargs.values()):
        if isinstance(value, inspect.Signature) and "limit" in value.parameters:
            return True  # only the victim has that parameter
        if isinstance(value, Message) and value.function == VICTIM:
            return True
        if isinstance(value, Execution) and value.function_name == VICTIM:
            return True
        if callable(value) and getattr(value, "__name__", None) == VICTIM:
            return True
        if isinstance(value, list) and any(
            getattr(getattr(c, "message", None), "function", None) == VICTIM for c in value
        ):
            return True
        attributes = getattr(value, "attributes", None)  # a metrics series
        if isinstance(attributes, dict) and attributes.get("shadows.task") == VICTIM:
            return True
        context = getattr(value, "execution", None)
        if isinstance(context, Execution) and context.function_name == VICTIM:
            return True
    return False


def _failing(original: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    """``original``, raising when called about the victim task."""
    if is_async:

        async def failing_async(*args: Any, **kwargs: Any) -> Any:
            if _mentions_victim(args, kwargs):
                raise RuntimeError("injected failure")
            return await original(*args, **kwargs)

        return failing_async

    def failing(*args: Any, **kwargs: Any) -> Any:
        if _mentions_victim(args, kwargs):
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    return failing


# Every step of a message's way through the runner: (where, attribute, async?).
STEPS: list[tuple[Any, str, bool]] = [
    (runner, "plan_for", False),
    (runner, "task_arguments", False),
    (runner, "flatten_arguments", False),
    (Runner, "acquire", True),
    (Runner, "allowed_to_run", False),
    (instrumentation, "running", False),
    (WorkerMetrics, "run_started", False),
    (Execution, "call_repr", False),
    (runner, "resolve_arguments", True),
    (WorkerMetrics, "run_ended", False),
    (runner, "next_run", False),
    (WorkerMetrics, "finished", False),
    (Completions, "_settle", True),
]


@pytest.mark.parametrize(
    ("where", "attribute", "is_async"),
    STEPS,
    ids=[f"{getattr(w, '__name__', w)}.{a}" for w, a, _ in STEPS],
)
async def test_a_failure_in_any_step_ends_that_message_and_the_worker_goes_on(
    shadow: Shadow,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: Any,
    attribute: str,
    is_async: bool,
) -> None:
    ran: list[int] = []

    async def victim(
        n: int, limit: ConcurrencyLimit = ConcurrencyLimit("n", max_concurrent=5)
    ) -> None:
        ran.append(-n)

    async def fine(n: int) -> None:
        ran.append(n)

    # A strike in effect that matches nothing, so that strikes are checked.
    await shadow.strike(fine, "n", "==", 999)
    await shadow.add(victim, key="the-victim")(1)
    for n in (1, 2, 3):
        await shadow.add(fine)(n)
    original = getattr(where, attribute)
    monkeypatch.setattr(where, attribute, _failing(original, is_async))

    with caplog.at_level(logging.DEBUG, logger="shadows"):
        async with Worker(shadow, concurrency=2) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 30)

    assert sorted(n for n in ran if n > 0) == [1, 2, 3]
    assert "injected failure" in caplog.text
    assert "Traceback" in caplog.text
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    letter = await shadow.failed_task("the-victim")
    if attribute == "finished":
        # Counting failed, not the run: it is settled as it ended.
        assert await shadow.task_state("the-victim") == "completed"
        assert letter is None
    elif attribute == "_settle":
        # The COMPLETE script itself refused it: acknowledged plainly, as failed.
        assert await shadow.task_state("the-victim") == "failed"
        assert letter is None
    else:
        assert await shadow.task_state("the-victim") == "failed"
        assert letter is not None
        # Resolving dependencies is part of the run: a failure there is the task's own.
        assert letter.reason == ("failed" if attribute == "resolve_arguments" else "internal")
        assert "injected failure" in letter.error


async def test_an_internal_failure_is_retried_by_the_tasks_policy(
    shadow: Shadow, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    async def victim(retry: Retry = Retry(attempts=3)) -> None:
        attempts.append(retry.attempt)

    original = runner.task_arguments
    failed_once: list[bool] = []

    def fail_once(execution: Execution) -> dict[str, Any]:
        if not failed_once:
            failed_once.append(True)
            raise RuntimeError("injected once")
        return original(execution)

    monkeypatch.setattr(runner, "task_arguments", fail_once)
    await shadow.add(victim, key="retried")()
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)
    assert attempts == [2]
    assert await shadow.task_state("retried") == "completed"
    assert worker.metrics.task(VICTIM).retried == 1


async def test_mocks_partials_methods_and_callable_objects_run_and_render(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, Any]] = []

    mocked = AsyncMock()
    mocked.__name__ = "mocked"
    sync_mock = MagicMock(return_value=None)
    sync_mock.__name__ = "sync_mock"
    unnamed = AsyncMock()

    async def greet(greeting: str, name: Annotated[str, Logged]) -> None:
        calls.append(("partial", (greeting, name)))

    class Mailer:
        async def send(self, to: Annotated[str, Logged]) -> None:
            calls.append(("method", to))

    class Counter:
        async def __call__(self, by: Annotated[int, Logged]) -> None:
            calls.append(("object", by))

    class SyncCounter:
        def __call__(self, by: int) -> None:
            calls.append(("sync object", by))

    mailer = Mailer()
    hello = functools.partial(greet, "hello")
    for task in (mocked, sync_mock, unnamed, hello, mailer.send, Counter(), SyncCounter()):
        shadow.register(task)
    assert {"mocked", "sync_mock", "AsyncMock", "greet", "send", "Counter", "SyncCounter"} <= set(
        shadow.tasks
    )

    await shadow.add(mocked)(1, flag=True)
    await shadow.add("sync_mock")("x")
    await shadow.add(unnamed)()
    await shadow.add(hello)("Ada")
    await shadow.add(mailer.send)("ada@example.com")
    await shadow.add("Counter")(by=3)
    await shadow.add("SyncCounter")(4)
    with caplog.at_level(logging.DEBUG, logger="shadows"):
        async with Worker(shadow) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 20)

    mocked.assert_awaited_once_with(1, flag=True)
    sync_mock.assert_called_once_with("x")
    unnamed.assert_awaited_once_with()
    assert sorted(calls, key=repr) == sorted(
        [
            ("partial", ("hello", "Ada")),
            ("method", "ada@example.com"),
            ("object", 3),
            ("sync object", 4),
        ],
        key=repr,
    )
    text = caplog.text
    assert "mocked(..., flag=...)" in text
    assert "greet('Ada')" in text
    assert "send('ada@example.com')" in text
    assert "Counter(by=3)" in text
    assert "SyncCounter(...)" in text
    assert "failed" not in text.lower().replace("failed_", "")


async def test_a_sync_wrapper_returning_a_coroutine_is_awaited(shadow: Shadow) -> None:
    done: list[int] = []

    async def inner(n: int) -> None:
        done.append(n)

    def decorated(n: int) -> Any:  # a sync decorator around an async function
        return inner(n)

    await shadow.add(decorated)(7)
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)
    assert done == [7]
    assert await shadow.task_state(next(iter(await _keys(shadow)))) == "completed"


async def _keys(shadow: Shadow) -> list[str]:
    prefix = shadow.keys.run("")
    return [
        key.decode()[len(prefix) :]
        async for key in shadow.client.scan_iter(match=f"{prefix}*", count=100)
    ]
