"""Execution state, progress and results, on real Redis and on memory://."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conftest import _cleanup, wait_for
from shadows import (
    Cooldown,
    ExecutionCancelled,
    ExecutionState,
    Progress,
    RemoteError,
    ResultError,
    ResultTooLarge,
    Retry,
    Shadow,
    Worker,
)


async def add_two(a: int, b: int) -> int:
    return a + b


class CustomError(Exception):
    pass


async def fails(text: str) -> None:
    raise CustomError(text)


async def test_states_from_scheduled_to_completed(shadow: Shadow) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    scheduled = await shadow.add(add_two, when=later, key="later")(1, 2)
    assert scheduled.state is ExecutionState.SCHEDULED
    queued = await shadow.add(add_two, key="now")(1, 2)
    assert queued.state is ExecutionState.QUEUED

    found = await shadow.get_execution("later")
    assert found is not None and found.state is ExecutionState.SCHEDULED
    assert found.function is add_two or found.function_name == "add_two"
    assert await shadow.get_execution("nothing") is None

    assert await shadow.cancel("later")
    shadow.register(add_two)
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    done = await shadow.get_execution("now")
    assert done is not None
    assert done.state is ExecutionState.COMPLETED
    assert done.started_at is not None and done.finished_at is not None
    assert done.started_at <= done.finished_at
    assert done.error is None
    assert await queued.get_result(timeout=5) == 3
    assert await done.get_result(timeout=5) == 3


async def test_get_result_waits_for_a_task_not_run_yet(shadow: Shadow) -> None:
    shadow.register(add_two)
    execution = await shadow.add(add_two)(20, 22)
    waiting = asyncio.create_task(execution.get_result(timeout=10))
    await asyncio.sleep(0)
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert await waiting == 42
    refreshed = await execution.refresh()
    assert refreshed.state is ExecutionState.COMPLETED


async def test_get_result_on_an_execution_found_by_key_waits_for_its_run(
    shadow: Shadow,
) -> None:
    shadow.register(add_two)
    soon = datetime.now(UTC) + timedelta(milliseconds=200)
    await shadow.add(add_two, when=soon, key="soon")(4, 5)
    found = await shadow.get_execution("soon")
    assert found is not None and found.state is ExecutionState.SCHEDULED
    waiting = asyncio.create_task(found.get_result(timeout=10))

    async def watched() -> bool:
        return bool(await shadow.client.hexists(shadow.keys.run("soon"), "watched"))

    await wait_for(watched, message="get_result waiting on the record")
    assert not waiting.done()
    async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=10)) as worker:
        await worker.run_until_finished()
    assert await asyncio.wait_for(waiting, 10) == 9


async def test_a_run_dropped_by_flow_control_reads_as_cancelled(shadow: Shadow) -> None:
    @shadow.task(cooldown=Cooldown(timedelta(hours=1)))
    async def ping(n: int) -> int:
        return n

    first = await ping.schedule(1)
    second = await ping.schedule(2)
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert await first.get_result(timeout=5) == 1
    found = await shadow.get_execution(second.key)
    assert found is not None and found.state is ExecutionState.CANCELLED
    assert found.finished_at is not None
    assert await shadow.task_state(second.key) == "dropped"
    with pytest.raises(ExecutionCancelled):
        await found.get_result(timeout=5)


async def test_get_result_times_out(shadow: Shadow) -> None:
    execution = await shadow.add(add_two)(1, 1)
    with pytest.raises(TimeoutError):
        await execution.get_result(timeout=0.2)


async def test_get_result_of_an_execution_gone_from_redis_is_a_lookup_error(
    shadow: Shadow,
) -> None:
    execution = await shadow.add(add_two, key="gone")(1, 1)
    assert await shadow.cancel("gone")
    await shadow.client.delete(shadow.keys.run("gone"))  # as once execution_ttl has passed
    with pytest.raises(LookupError):
        await execution.get_result(timeout=5)
    assert await shadow.get_execution("gone") is None


async def test_a_failed_task_raises_its_own_exception(shadow: Shadow) -> None:
    shadow.register(fails)
    execution = await shadow.add(fails, key="boom")("it broke")
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    with pytest.raises(CustomError, match="it broke"):
        await execution.get_result(timeout=5)
    found = await shadow.get_execution("boom")
    assert found is not None and found.state is ExecutionState.FAILED
    assert found.error == "CustomError: it broke"


async def test_an_exception_of_an_unknown_type_is_a_remote_error(shadow: Shadow) -> None:
    shadow.register(fails)
    await shadow.add(fails, key="boom")("text")
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    await shadow.client.hset(shadow.keys.run("boom"), "error_type", "nowhere.module:Gone")
    found = await shadow.get_execution("boom")
    assert found is not None
    with pytest.raises(RemoteError, match="Gone: text"):
        await found.get_result(timeout=5)


async def test_a_retried_task_is_scheduled_again_then_fails(shadow: Shadow) -> None:
    attempts: list[int] = []

    async def flaky(retry: Retry = Retry(attempts=2)) -> None:
        attempts.append(retry.attempt)
        raise ValueError(f"attempt {retry.attempt}")

    shadow.register(flaky)
    execution = await shadow.add(flaky, key="flaky")()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert attempts == [1, 2]
    with pytest.raises(ValueError, match="attempt 2"):
        await execution.get_result(timeout=5)


async def test_results_are_signed_and_checked(url: str, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=url, signing_key="secret") as shadow:
        shadow.register(add_two)
        execution = await shadow.add(add_two, key="sum")(2, 3)
        other = await shadow.add(add_two, key="other")(4, 5)
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
        assert await execution.get_result(timeout=5) == 5
        assert await other.get_result(timeout=5) == 9
        # kept with the run record, which expires execution_ttl after the run ended
        ttl = await shadow.client.ttl(shadow.keys.run("sum"))
        assert 0 < ttl <= shadow.execution_ttl.total_seconds()
        # a result signed for another key is refused, as is one written unsigned
        signed = await shadow.client.hget(shadow.keys.run("sum"), "result")
        await shadow.client.hset(shadow.keys.run("other"), "result", signed)
        with pytest.raises(ValueError, match="signature"):
            await other.get_result(timeout=5)
        await shadow.client.hset(shadow.keys.run("sum"), "result", shadow.codec.dumps(666))
        with pytest.raises(ValueError, match="signature"):
            await execution.get_result(timeout=5)
        await _cleanup(shadow)


async def test_results_can_be_turned_off(url: str, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=url, results=False) as shadow:
        shadow.register(add_two)
        execution = await shadow.add(add_two)(2, 3)
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
        assert await execution.get_result(timeout=5) is None
        assert not await shadow.client.hexists(shadow.keys.run(execution.key), "result")
        await _cleanup(shadow)


async def test_a_task_can_opt_out_of_results(shadow: Shadow) -> None:
    @shadow.task(results=False)
    async def secret() -> str:
        return "not kept"

    execution = await secret.schedule()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert await execution.get_result(timeout=5) is None


async def test_a_result_above_the_cap_is_refused_clearly(url: str, shadow_name: str) -> None:
    async def big() -> bytes:
        return b"x" * 5000

    async with Shadow(name=shadow_name, url=url, result_max_bytes=1000) as shadow:
        shadow.register(big)
        execution = await shadow.add(big)()
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
        with pytest.raises(ResultTooLarge, match=r"50[0-9]+ bytes encoded, above result_max_bytes"):
            await execution.get_result(timeout=5)
        found = await shadow.get_execution(execution.key)
        assert found is not None and found.state is ExecutionState.COMPLETED
        assert not await shadow.client.hexists(shadow.keys.run(execution.key), "result")
        await _cleanup(shadow)


async def test_progress_is_readable_and_streamed(shadow: Shadow) -> None:
    release = asyncio.Event()

    async def crunch(progress: Progress = Progress()) -> str:
        await progress.set_total(3)
        await progress.set_message("crunching")
        for _ in range(3):
            await progress.increment()
        await release.wait()
        return "done"

    shadow.register(crunch)
    execution = await shadow.add(crunch, key="crunch")()
    events = []

    async def follow() -> None:
        async for event in execution.subscribe():
            events.append(event)

    following = asyncio.create_task(follow())
    async with Worker(shadow) as worker:
        running = asyncio.create_task(worker.run_until_finished())

        async def reported() -> bool:
            found = await shadow.get_execution("crunch")
            return found is not None and found.progress.current == 3

        await wait_for(reported, message="progress reported")
        found = await shadow.get_execution("crunch")
        assert found is not None
        assert found.state is ExecutionState.RUNNING
        assert (found.progress.total, found.progress.message) == (3, "crunching")
        assert found.progress.fraction == 1.0
        release.set()
        await running
    await asyncio.wait_for(following, 10)
    assert events[0].state in (ExecutionState.QUEUED, ExecutionState.RUNNING)
    assert events[-1].kind == "state" and events[-1].state is ExecutionState.COMPLETED
    assert any(e.kind == "progress" or e.progress.current > 0 for e in events)
    assert await execution.get_result(timeout=5) == "done"


async def test_a_cancelled_scheduled_task_keeps_a_cancelled_state(shadow: Shadow) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    execution = await shadow.add(add_two, when=later, key="k")(1, 2)
    assert await shadow.cancel("k")
    found = await shadow.get_execution("k")
    assert found is not None and found.state is ExecutionState.CANCELLED
    with pytest.raises(ExecutionCancelled):
        await execution.get_result(timeout=5)
    # the key is free again
    again = await shadow.add(add_two, when=later, key="k")(1, 2)
    assert again.state is ExecutionState.SCHEDULED


async def test_a_result_the_codec_cannot_encode_is_refused_clearly(
    url: str, shadow_name: str
) -> None:
    async def unencodable() -> object:
        return object()

    async with Shadow(name=shadow_name, url=url, codec="json") as shadow:
        shadow.register(unencodable)
        execution = await shadow.add(unencodable)()
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
        with pytest.raises(ResultError, match="cannot be encoded with the json codec"):
            await execution.get_result(timeout=5)
        found = await shadow.get_execution(execution.key)
        assert found is not None and found.state is ExecutionState.COMPLETED
        await _cleanup(shadow)


async def test_only_a_watched_run_is_announced(shadow: Shadow) -> None:
    """A run nobody watches costs no PUBLISH; a watched one announces it runs and ends,
    and its end clears the mark."""
    shadow.register(add_two)
    listener = shadow.client.pubsub()
    await listener.psubscribe(f"{shadow.keys.run('*')}:events")
    heard: list[tuple[str, str]] = []

    async def drain() -> None:
        while (message := await listener.get_message(True, timeout=0.2)) is not None:
            channel, data = (
                v.decode() if isinstance(v, bytes) else str(v)
                for v in (message["channel"], message["data"])
            )
            heard.append((channel, data))

    try:
        await shadow.add(add_two, key="quiet")(1, 2)
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
        await drain()
        assert heard == []

        watched = await shadow.add(add_two, key="watched")(2, 3)
        events: list[ExecutionState] = []

        async def follow() -> None:
            async for event in watched.subscribe():
                events.append(event.state)

        following = asyncio.create_task(follow())

        async def marked() -> bool:
            return bool(await shadow.client.hexists(shadow.keys.run("watched"), "watched"))

        await wait_for(marked, message="the run marked watched")
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
        await asyncio.wait_for(following, 10)
        await drain()
        channel = f"{shadow.keys.run('watched')}:events"
        assert heard == [(channel, "running"), (channel, "completed")]
        assert events[-1] is ExecutionState.COMPLETED
        assert not await marked()
        assert await watched.get_result(timeout=5) == 5
    finally:
        await listener.aclose()
