"""Cancelling work that is already running, on real Redis and on memory://."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import wait_for
from redis_server import RedisProcess
from shadows import (
    ConcurrencyLimit,
    ExecutionCancelled,
    ExecutionState,
    Perpetual,
    Progress,
    Retry,
    Shadow,
    Worker,
)
from shadows.core.keys import WORKER_GROUP


async def state_of(shadow: Shadow, key: str) -> ExecutionState | None:
    found = await shadow.get_execution(key)
    return found.state if found is not None else None


async def test_cancelling_a_running_task_stops_it_within_a_second(shadow: Shadow) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)
        finished.append("no")

    shadow.register(forever)
    execution = await shadow.add(forever, key="long")()
    async with Worker(shadow) as worker:
        running = asyncio.create_task(worker.run_until_finished())
        await asyncio.wait_for(started.wait(), 10)
        assert await state_of(shadow, "long") is ExecutionState.RUNNING
        asked = time.monotonic()
        assert await shadow.cancel("long")
        with pytest.raises(ExecutionCancelled):
            await execution.get_result(timeout=5)
        assert time.monotonic() - asked < 1.5
        await asyncio.wait_for(running, 10)
    assert finished == []
    assert await state_of(shadow, "long") is ExecutionState.CANCELLED
    assert not await shadow.client.hexists(shadow.keys.run("long"), "revoked")
    assert await shadow.client.xlen(shadow.keys.stream) == 0


async def test_no_retry_runs_after_a_cancellation(shadow: Shadow) -> None:
    started: list[int] = []

    async def stubborn(retry: Retry = Retry(attempts=5)) -> None:
        started.append(retry.attempt)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleaning up failed") from None

    shadow.register(stubborn)
    await shadow.add(stubborn, key="s")()
    async with Worker(shadow) as worker:
        running = asyncio.create_task(worker.run_until_finished())
        await wait_for(lambda: bool(started), message="the task started")
        assert await shadow.cancel("s")
        await asyncio.wait_for(running, 10)
    assert started == [1]
    assert await state_of(shadow, "s") is ExecutionState.CANCELLED
    assert await shadow.client.zcard(shadow.keys.queue) == 0


async def test_no_next_perpetual_run_after_a_cancellation(shadow: Shadow) -> None:
    runs: list[int] = []

    async def ticking(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10))) -> None:
        runs.append(1)
        await asyncio.sleep(3600)

    shadow.register(ticking)
    await shadow.add(ticking, key="tick")()
    async with Worker(shadow) as worker:
        running = asyncio.create_task(worker.run_until_finished())
        await wait_for(lambda: bool(runs), message="the first run")
        assert await shadow.cancel("tick")
        await asyncio.wait_for(running, 10)
    assert runs == [1]
    assert await state_of(shadow, "tick") is ExecutionState.CANCELLED


async def test_cancelling_reaches_whichever_of_several_workers_runs_it(shadow: Shadow) -> None:
    started: dict[str, str] = {}
    ended: list[str] = []

    async def slow_plain(label: str) -> None:
        started[label] = "?"
        await asyncio.sleep(3600)
        ended.append(label)

    shadow.register(slow_plain)
    for label in ("a", "b", "c", "d"):
        await shadow.add(slow_plain, key=label)(label)
    workers = [Worker(shadow, name=f"w{i}", concurrency=2) for i in range(3)]
    runs = [asyncio.create_task(w.run_until_finished()) for w in workers]
    await wait_for(lambda: len(started) == 4, message="all four running")
    holders = {w.name: set(w.active_keys) for w in workers}
    assert sum(len(keys) for keys in holders.values()) == 4
    for label in ("a", "b", "c", "d"):
        assert await shadow.cancel(label)
    await asyncio.wait_for(asyncio.gather(*runs), 10)
    assert ended == []
    for label in ("a", "b", "c", "d"):
        assert await state_of(shadow, label) is ExecutionState.CANCELLED


async def test_a_revoked_message_of_a_dead_worker_never_runs_elsewhere(shadow: Shadow) -> None:
    ran: list[str] = []

    async def work() -> None:
        ran.append("ran")

    shadow.register(work)
    await shadow.ensure_group()
    await shadow.add(work, key="orphan")()
    # A worker takes the message and dies before running it.
    await shadow.client.xreadgroup(WORKER_GROUP, "dead", {shadow.keys.stream: ">"}, count=1)
    await shadow.client.hset(shadow.keys.run("orphan"), "state", "running")
    assert await shadow.cancel("orphan")
    assert await shadow.client.hexists(shadow.keys.run("orphan"), "revoked")
    assert await state_of(shadow, "orphan") is ExecutionState.RUNNING  # until settled
    async with Worker(shadow, redelivery_timeout=timedelta(milliseconds=200)) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 10)
    assert ran == []
    assert await state_of(shadow, "orphan") is ExecutionState.CANCELLED
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    # the key is free again, and a new run of it is not affected
    await shadow.add(work, key="orphan")()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert ran == ["ran"]


async def test_cancelling_queued_work_removes_it(shadow: Shadow) -> None:
    ran: list[str] = []

    async def work() -> None:
        ran.append("ran")

    shadow.register(work)
    await shadow.add(work, key="q")()
    assert await shadow.cancel("q")
    assert await state_of(shadow, "q") is ExecutionState.CANCELLED
    assert not await shadow.cancel("q")  # already ended
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert ran == []
    assert not await shadow.cancel("never-added")


@pytest.fixture
def persistent() -> Iterator[RedisProcess]:
    with RedisProcess(persistent=True) as server:
        yield server


async def test_a_revocation_survives_a_redis_restart(persistent: RedisProcess) -> None:
    ran: list[str] = []

    async def work() -> None:
        ran.append("ran")

    async with Shadow(name="revocations", url=persistent.url) as shadow:
        shadow.register(work)
        await shadow.ensure_group()
        await shadow.add(work, key="k")()
        await shadow.client.xreadgroup(WORKER_GROUP, "dead", {shadow.keys.stream: ">"}, count=1)
        assert await shadow.cancel("k")
    persistent.restart()
    async with Shadow(name="revocations", url=persistent.url) as shadow:
        shadow.register(work)
        async with Worker(shadow, redelivery_timeout=timedelta(milliseconds=200)) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 20)
        assert ran == []
        assert await state_of(shadow, "k") is ExecutionState.CANCELLED


async def test_the_acl_user_of_the_production_guide_can_watch_and_cancel(
    tmp_path: Path, repo_root: Path
) -> None:
    [command] = [
        line
        for line in (repo_root / "docs" / "production.md").read_text().splitlines()
        if line.startswith("ACL SETUSER shadows ")
    ]
    acl = tmp_path / "users.acl"
    acl.write_text("user default off\n" + command.replace("ACL SETUSER ", "user ", 1) + "\n")
    started = asyncio.Event()

    async def report(progress: Progress = Progress()) -> int:
        await progress.set_total(2)
        await progress.increment(2)
        await progress.set_message("done")
        return 2

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    with RedisProcess(extra_args=["--aclfile", str(acl)]) as server:
        url = f"redis://shadows:CHANGE-ME@127.0.0.1:{server.port}/0"
        async with Shadow(name="orders", url=url) as shadow:
            shadow.register(report)
            shadow.register(forever)
            reported = await shadow.add(report)()
            events = []

            async def follow() -> None:
                async for event in reported.subscribe():
                    events.append(event)

            following = asyncio.create_task(follow())
            stopped = await shadow.add(forever, key="forever")()
            async with Worker(shadow) as worker:
                running = asyncio.create_task(worker.run_until_finished())
                assert await reported.get_result(timeout=10) == 2
                await asyncio.wait_for(started.wait(), 10)
                assert await shadow.cancel("forever")
                with pytest.raises(ExecutionCancelled):
                    await stopped.get_result(timeout=10)
                await asyncio.wait_for(running, 10)
            await asyncio.wait_for(following, 10)
    assert events[-1].state is ExecutionState.COMPLETED
    assert events[-1].progress.message == "done"


async def test_a_user_without_pub_sub_still_runs_watches_and_cancels(tmp_path: Path) -> None:
    """An ACL written before execution state (no channels, no PUBLISH): workers run as
    before, the announcements are skipped, and watchers read the record every
    RECHECK_SECONDS instead of being woken."""
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off\n"
        "user shadows on >pw ~{old}:* resetchannels +@read +@write +@stream +@scripting "
        "+@connection +@keyspace -@dangerous +client|id +time\n"
    )

    async def answer() -> int:
        return 42

    with RedisProcess(extra_args=["--aclfile", str(acl)]) as server:
        url = f"redis://shadows:pw@127.0.0.1:{server.port}/0"
        async with Shadow(name="old", url=url) as shadow:
            shadow.register(answer)
            execution = await shadow.add(answer)()
            async with Worker(shadow) as worker:
                running = asyncio.create_task(worker.run_until_finished())
                assert await execution.get_result(timeout=10) == 42
                await asyncio.wait_for(running, 10)


async def test_a_copy_claimed_elsewhere_is_not_run_after_the_cancellation(shadow: Shadow) -> None:
    """The running worker's claim was taken by another (a stall): the cancellation stops
    the first run, and the other worker settles its copy as cancelled without running
    it."""
    starts: list[str] = []

    async def long() -> None:
        starts.append("start")
        await asyncio.sleep(3600)

    shadow.register(long)
    await shadow.add(long, key="stalled")()
    # "second" never beats: its claim lapses after 3 of first's heartbeats, not 3 x 2 s
    beats = timedelta(milliseconds=200)
    async with Worker(shadow, name="first", heartbeat_interval=beats) as first:
        running = asyncio.create_task(first.run_until_finished())
        await wait_for(lambda: bool(starts), message="the first run")
        [pending] = await shadow.client.xpending_range(
            shadow.keys.stream, WORKER_GROUP, "-", "+", 1
        )
        message_id = pending["message_id"]
        await shadow.client.xclaim(
            shadow.keys.stream, WORKER_GROUP, "second", 0, [message_id], justid=True
        )
        assert await shadow.cancel("stalled")
        await asyncio.wait_for(running, 10)
    async with Worker(shadow, name="second") as second:
        await asyncio.wait_for(second.run_until_finished(), 10)
    assert starts == ["start"]
    assert await state_of(shadow, "stalled") is ExecutionState.CANCELLED
    assert await shadow.client.xlen(shadow.keys.stream) == 0


async def test_cancelling_a_run_gives_its_concurrency_slot_to_the_next(shadow: Shadow) -> None:
    """A cancelled run holding a ConcurrencyLimit slot frees it at once: the run waiting
    for it starts on another worker, and the cancelled one never runs again."""
    started: list[str] = []
    release = asyncio.Event()

    async def export(
        customer: str,
        label: str,
        limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1),
    ) -> None:
        started.append(label)
        if label == "first":
            await asyncio.sleep(3600)
        await release.wait()

    shadow.register(export)
    await shadow.add(export, key="first")("acme", "first")
    workers = [Worker(shadow, name=f"w{i}", concurrency=2) for i in range(2)]
    runs = [asyncio.create_task(w.run_until_finished()) for w in workers]
    await wait_for(lambda: started == ["first"], message="the first run")
    await shadow.add(export, key="second")("acme", "second")

    async def second_waits_for_the_slot() -> bool:
        pattern = f"{shadow.keys.home_prefix}waiting:*"
        async for pool in shadow.client.scan_iter(match=pattern):
            if await shadow.client.zscore(pool, "second") is not None:
                return True
        return False

    await wait_for(second_waits_for_the_slot, message="the second run parked for the slot")
    assert started == ["first"]
    assert await shadow.cancel("first")
    await wait_for(lambda: started == ["first", "second"], 5, "the second run, in the slot")
    release.set()
    await asyncio.wait_for(asyncio.gather(*runs), 10)
    assert started == ["first", "second"]
    assert await state_of(shadow, "first") is ExecutionState.CANCELLED
    assert await state_of(shadow, "second") is ExecutionState.COMPLETED
