"""Redis restarted empty under a running worker: the loss is noticed and logged once, the
automatic tasks start again, and the follow-ups of the tasks that were running (a retry,
the next perpetual run) are placed after all (a private redis-server without
persistence; real Redis only)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import pytest

from conftest import wait_for
from redis_server import RedisProcess
from shadows import Perpetual, Retry, Shadow, Worker
from shadows.core.message import Message
from shadows.worker.continuity import Continuity

FAST = timedelta(milliseconds=50)


async def test_a_redis_restarted_empty_loses_no_follow_up_and_no_automatic_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks: list[int] = []
    attempts: list[int] = []
    chain: list[int] = []
    hold = asyncio.Event()

    async def tick(perpetual: Perpetual = Perpetual(every=FAST, automatic=True)) -> None:
        ticks.append(len(ticks))

    async def flaky(retry: Retry = Retry(attempts=2)) -> None:
        attempts.append(retry.attempt)
        if retry.attempt == 1:
            await hold.wait()
            raise ValueError("the first attempt fails")

    async def chained(perpetual: Perpetual = Perpetual(every=FAST)) -> None:
        chain.append(len(chain))
        if len(chain) == 1:
            await hold.wait()
        elif len(chain) >= 3:
            perpetual.cancel()

    with RedisProcess(persistent=False) as server:
        # Heartbeats a second apart: the worker fences its running tasks once Redis has not
        # confirmed their claims for 2.5 intervals, and the restart (which blocks this
        # loop) can take longer than the 0.5 s of 200 ms beats on a loaded machine.
        async with Shadow(
            name="data-loss", url=server.url, heartbeat_interval=timedelta(seconds=1)
        ) as shadow:
            for task in (tick, flaky, chained):
                shadow.register(task)
            worker = Worker(
                shadow,
                reconnection_delay=timedelta(milliseconds=100),
                scheduling_resolution=FAST,
                minimum_check_interval=FAST,
            )
            with caplog.at_level(logging.INFO, logger="shadows"):
                async with worker:
                    running = asyncio.create_task(worker.run_forever())
                    try:
                        await shadow.add(flaky, key="flaky")()
                        await shadow.add(chained, key="chained")()
                        await wait_for(
                            lambda: attempts == [1] and chain == [0] and len(ticks) >= 2,
                            10,
                            "both long tasks running and the automatic task ticking",
                        )
                        server.restart()  # empty: no persistence
                        seen = len(ticks)
                        await wait_for(
                            lambda: len(ticks) >= seen + 2, 10, "the automatic task again"
                        )
                        hold.set()
                        await wait_for(lambda: attempts == [1, 2], 10, "the retry")
                        await wait_for(lambda: len(chain) == 3, 10, "the next perpetual runs")

                        async def settled() -> bool:
                            return {
                                await shadow.task_state("flaky"),
                                await shadow.task_state("chained"),
                            } == {"completed"}

                        await wait_for(settled, 10, "both keys recorded as completed")
                    finally:
                        worker.stop()
                        await asyncio.wait_for(running, 10)
    lost = [r for r in caplog.records if "Redis lost the data of shadow data-loss" in r.message]
    assert [r.levelname for r in lost] == ["ERROR"]
    assert worker.continuity.losses == 1


async def test_a_task_ending_just_after_an_empty_restart_still_gets_its_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its acknowledgement finds its message gone before any periodic look (heartbeats a
    minute apart, no read: the only slot is taken): the worker looks at once, restores
    the run record and settles it, so the retry is placed."""
    attempts: list[int] = []
    hold = asyncio.Event()

    async def flaky(retry: Retry = Retry(attempts=2)) -> None:
        attempts.append(retry.attempt)
        if retry.attempt == 1:
            await hold.wait()
            raise ValueError("the first attempt fails")

    with RedisProcess(persistent=False) as server:
        async with Shadow(
            name="data-loss-ack", url=server.url, heartbeat_interval=timedelta(minutes=1)
        ) as shadow:
            shadow.register(flaky)
            worker = Worker(
                shadow,
                concurrency=1,
                reconnection_delay=timedelta(milliseconds=100),
                scheduling_resolution=FAST,
                minimum_check_interval=FAST,
            )
            with caplog.at_level(logging.INFO, logger="shadows"):
                async with worker:
                    running = asyncio.create_task(worker.run_forever())
                    try:
                        await shadow.add(flaky, key="flaky")()
                        await wait_for(lambda: attempts == [1], 10, "the first attempt")
                        server.restart()
                        hold.set()
                        await wait_for(lambda: attempts == [1, 2], 10, "the retry")

                        async def completed() -> bool:
                            return await shadow.task_state("flaky") == "completed"

                        await wait_for(completed, 10, "the key recorded as completed")
                    finally:
                        worker.stop()
                        await asyncio.wait_for(running, 10)
    assert worker.continuity.losses == 1
    assert "Redis lost the data of shadow data-loss-ack" in caplog.text


async def test_a_task_settled_before_the_loss_keeps_no_restored_record(shadow: Shadow) -> None:
    """Its acknowledgement settled in the data Redis then lost, but the look that restores
    the running tasks' records reached Redis only after (a reconnection in between): its
    record would keep its key in use, so the automatic task was never seeded again."""

    def message(key: str, message_id: str) -> Message:
        return Message(key, key, 0, 1, b"", b"", message_id=message_id)

    running = [message("tick", "1-0"), message("other", "2-0")]
    settled = {running[0].ref}
    reseeded: list[datetime] = []

    async def reseed(not_before: datetime) -> None:
        reseeded.append(not_before)

    continuity = Continuity(shadow, "w", 0.2, 60, lambda: running, reseed)
    continuity.settled = lambda: settled
    assert not await continuity.check()
    await shadow.client.delete(shadow.keys.epoch)  # Redis lost the data
    assert await continuity.check()
    assert not await shadow.client.exists(shadow.keys.run("tick"))
    other = await shadow.client.hgetall(shadow.keys.run("other"))
    assert other[b"state"] == b"running" and other[b"restored"] == b"2-0"
    assert len(reseeded) == 1
