"""A task that schedules its own key's successor: chains written by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conftest import wait_for
from shadows import CurrentShadow, Retry, Shadow, TaskKey, Worker
from shadows.core.execution import Holder, current_holder


def soon(seconds: float = 0.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.mark.parametrize("how", ["replace", "add", "add-later"])
async def test_a_run_schedules_its_own_successor(shadow: Shadow, how: str) -> None:
    seen: list[int] = []

    async def process_batch(
        batch_id: int,
        total: int,
        shadows: Shadow = CurrentShadow(),
        key: str = TaskKey(),
    ) -> None:
        seen.append(batch_id)
        if batch_id < total:
            if how == "replace":
                await shadows.replace(process_batch, when=soon(), key=key)(batch_id + 1, total)
            elif how == "add":
                await shadows.add(process_batch, key=key)(batch_id + 1, total)
            else:
                await shadows.add(process_batch, when=soon(0.05), key=key)(batch_id + 1, total)

    await shadow.add(process_batch, key="batch-job")(batch_id=1, total=3)
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_at_most({"batch-job": 3}), 20)
    assert seen == [1, 2, 3]
    assert await shadow.task_state("batch-job") == "completed"


async def test_the_successor_runs_after_the_run_ends_never_beside_it(shadow: Shadow) -> None:
    running: list[int] = []
    overlaps: list[tuple[int, list[int]]] = []
    release = asyncio.Event()

    async def step(n: int, shadows: Shadow = CurrentShadow(), key: str = TaskKey()) -> None:
        if running:
            overlaps.append((n, list(running)))
        running.append(n)
        try:
            if n < 3:
                await shadows.add(step, key=key)(n + 1)  # due now, but this run holds the key
                # Still holding the key: the successor waits, unseen by every worker.
                assert await shadows.task_state(key) in ("running", "queued")
                assert await shadows.client.xlen(shadows.keys.stream) == 1
                if n == 1:
                    await release.wait()
        finally:
            running.remove(n)

    await shadow.add(step, key="chain")(1)
    async with Worker(shadow, concurrency=5) as worker:
        runner = asyncio.create_task(worker.run_until_finished())
        await wait_for(lambda: running == [1], message="the first run")
        release.set()
        await asyncio.wait_for(runner, 20)
    assert overlaps == []


async def test_outside_the_run_a_running_key_stays_taken(shadow: Shadow) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()
    runs: list[str] = []

    async def hold(label: str) -> None:
        runs.append(label)
        started.set()
        await finish.wait()

    await shadow.add(hold, key="held")("first")
    async with Worker(shadow) as worker:
        runner = asyncio.create_task(worker.run_until_finished())
        await asyncio.wait_for(started.wait(), 10)
        # Another producer (no run context) and a run of another key are both refused.
        await shadow.add(hold, key="held")("from outside")
        await shadow.replace(hold, when=soon(), key="held")("replaced from outside")
        token = current_holder.set(Holder(shadow.name, "other-key", "0-1"))
        try:
            await shadow.add(hold, key="held")("from another run")
        finally:
            current_holder.reset(token)
        finish.set()
        await asyncio.wait_for(runner, 10)
    assert runs == ["first"]


async def test_a_second_add_from_the_run_is_a_no_op_and_replace_overrides(
    shadow: Shadow,
) -> None:
    seen: list[str] = []

    async def relay(label: str, shadows: Shadow = CurrentShadow(), key: str = TaskKey()) -> None:
        seen.append(label)
        if label == "start":
            await shadows.add(relay, key=key)("first add")
            await shadows.add(relay, key=key)("second add")  # no-op: one successor
        elif label == "first add":
            await shadows.add(relay, key=key)("to be replaced")
            await shadows.replace(relay, when=soon(), key=key)("replacement")

    await shadow.add(relay, key="relay")("start")
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)
    assert seen == ["start", "first add", "replacement"]


async def test_cancel_from_the_run_drops_its_successor(shadow: Shadow) -> None:
    seen: list[int] = []

    async def once(n: int, shadows: Shadow = CurrentShadow(), key: str = TaskKey()) -> None:
        seen.append(n)
        if n == 1:
            await shadows.add(once, key=key)(2)
            assert await shadows.cancel(key)

    await shadow.add(once, key="once")(1)
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)
    assert seen == [1]
    assert not await shadow.client.exists(shadow.keys.successor("once"))


async def test_a_failed_run_still_hands_over_to_its_successor(shadow: Shadow) -> None:
    """Dead-lettered (no retry left): the successor it scheduled runs all the same."""
    seen: list[int] = []

    async def fragile(n: int, shadows: Shadow = CurrentShadow(), key: str = TaskKey()) -> None:
        seen.append(n)
        if n == 1:
            await shadows.add(fragile, key=key)(2)
            raise RuntimeError("after scheduling")

    await shadow.add(fragile, key="fragile")(1)
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)
    assert seen == [1, 2]
    assert await shadow.failed_task("fragile") is not None
    assert await shadow.task_state("fragile") == "completed"


async def test_a_retried_run_schedules_its_successor_once(shadow: Shadow) -> None:
    """A retry runs the same call again: the successor of the failed attempt is dropped
    and the retried attempt schedules it anew (exactly one successor)."""
    seen: list[tuple[int, int]] = []

    async def flaky(
        n: int,
        shadows: Shadow = CurrentShadow(),
        key: str = TaskKey(),
        retry: Retry = Retry(attempts=3),
    ) -> None:
        seen.append((n, retry.attempt))
        if n == 1:
            await shadows.replace(flaky, when=soon(), key=key)(2)
            if retry.attempt < 3:
                raise RuntimeError("flaky")

    await shadow.add(flaky, key="flaky")(1)
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)
    assert seen == [(1, 1), (1, 2), (1, 3), (2, 1)]


async def test_a_stricken_successor_is_skipped_and_the_chain_ends(shadow: Shadow) -> None:
    seen: list[int] = []

    async def link(n: int, shadows: Shadow = CurrentShadow(), key: str = TaskKey()) -> None:
        seen.append(n)
        await shadows.add(link, key=key)(n + 1)

    await shadow.strike(link, "n", "==", 2)
    await shadow.add(link, key="link")(1)
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)
    assert seen == [1]
    assert await shadow.task_state("link") == "stricken"


async def test_batches_from_the_run_schedule_the_successor_too(shadow: Shadow) -> None:
    seen: list[int] = []

    async def batched(n: int, shadows: Shadow = CurrentShadow(), key: str = TaskKey()) -> None:
        seen.append(n)
        if n < 2:
            async with shadows.batch() as batch:
                batch.add(batched, key=key)(n + 1)
            assert batch.outcomes == ["successor"]

    await shadow.add(batched, key="batched")(1)
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)
    assert seen == [1, 2]


async def test_a_successor_survives_its_run_being_cut_short(url: str, shadow_name: str) -> None:
    """The first worker is cancelled after the run scheduled its successor: the message
    goes back to the stream, runs again elsewhere, and the successor runs once, after it.
    (A worker killed outright is the chaos suite's part.)"""
    seen: list[tuple[str, int]] = []
    blocked = asyncio.Event()

    async def chained(n: int, shadows: Shadow = CurrentShadow(), key: str = TaskKey()) -> None:
        seen.append((shadows.name, n))
        if n == 1:
            await shadows.add(chained, key=key)(2)
            if not blocked.is_set():
                blocked.set()
                await asyncio.Event().wait()  # hangs until the worker is cancelled

    async with Shadow(name=shadow_name, url=url) as shadow:
        shadow.register(chained)
        await shadow.add(chained, key="survivor")(1)
        doomed = Worker(shadow, name="doomed", redelivery_timeout=timedelta(milliseconds=300))
        async with doomed:
            dying = asyncio.create_task(doomed.run_forever())
            await asyncio.wait_for(blocked.wait(), 10)
            dying.cancel()
            with pytest.raises(asyncio.CancelledError):
                await dying
        async with Worker(
            shadow, name="heir", redelivery_timeout=timedelta(milliseconds=300)
        ) as heir:
            await asyncio.wait_for(heir.run_until_finished(), 20)
        assert [n for _, n in seen] in ([1, 1, 2], [1, 2])
        assert seen[-1][1] == 2
        assert await shadow.task_state("survivor") == "completed"
