"""Redis paused (SIGSTOP) for less than the redelivery timeout: no task runs twice
because of it when it can be avoided (a private redis-server; real Redis only)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from conftest import wait_for
from redis_server import RedisProcess
from shadows import Shadow, Worker
from shadows.core.keys import WORKER_GROUP


async def test_a_task_that_ends_during_a_pause_is_settled_not_run_again() -> None:
    """The run is over when Redis stops answering: its claim cannot be confirmed past 70%
    of the redelivery timeout, but nothing can overlap a finished run, so its outcome
    waits for Redis instead of being dropped and the task run a second time."""
    runs: list[float] = []
    finish = asyncio.Event()

    async def brief() -> None:
        runs.append(time.monotonic())
        await finish.wait()

    timeout = timedelta(seconds=4)
    with RedisProcess(persistent=False) as server:
        # commands time out at once during the pause: the acknowledgement is sent again
        # and again, and none is in flight when the pause ends
        url = f"{server.url}?socket_timeout=0.1"
        async with Shadow(name="pause-settle", url=url) as shadow:
            shadow.register(brief)
            worker = Worker(
                shadow,
                redelivery_timeout=timeout,
                reconnection_delay=timedelta(milliseconds=100),
                minimum_check_interval=timedelta(milliseconds=50),
                scheduling_resolution=timedelta(milliseconds=50),
            )
            async with worker:
                running = asyncio.create_task(worker.run_forever())
                try:
                    await shadow.add(brief, key="brief")()
                    await wait_for(lambda: len(runs) == 1, 10, "the run")

                    async def renewed() -> bool:
                        pending = await shadow.client.xpending_range(
                            shadow.keys.stream, WORKER_GROUP, min="-", max="+", count=1
                        )
                        return bool(pending) and pending[0]["time_since_delivered"] < 100

                    await wait_for(renewed, 10, "a renewal of the claim")
                    server.pause()
                    try:
                        finish.set()  # it ends at once; its acknowledgement waits
                        # past 70% of the timeout since the renewal, short of 100% (so no
                        # other claim is possible)
                        await asyncio.sleep(0.9 * timeout.total_seconds())
                    finally:
                        server.resume()

                    async def completed() -> bool:
                        return await shadow.task_state("brief") == "completed"

                    # (were it dropped, only a second run would record an outcome)
                    await wait_for(completed, 10, "the outcome to be recorded")
                finally:
                    worker.stop()
                    await asyncio.wait_for(running, 10)
    assert len(runs) == 1


async def test_a_pause_under_the_fencing_margin_cancels_nothing() -> None:
    """A pause shorter than both 70% of the heartbeat window minus a beat interval (2.2 s
    by default) and 45% of the redelivery timeout (claims are renewed every quarter of it
    and fenced at 70%) never cancels a running task: its commands time out and are sent
    again meanwhile, and every task runs once."""
    runs: list[str] = []
    ended: list[str] = []

    async def steady(label: str) -> None:
        runs.append(label)
        await asyncio.sleep(2.5)
        ended.append(label)

    timeout = timedelta(seconds=4)
    with RedisProcess(persistent=False) as server:
        url = f"{server.url}?socket_timeout=0.1"
        async with Shadow(name="pause-short", url=url) as shadow:
            shadow.register(steady)
            worker = Worker(
                shadow,
                redelivery_timeout=timeout,
                reconnection_delay=timedelta(milliseconds=100),
                minimum_check_interval=timedelta(milliseconds=50),
                scheduling_resolution=timedelta(milliseconds=50),
            )
            async with worker:
                running = asyncio.create_task(worker.run_forever())
                try:
                    for label in "abc":
                        await shadow.add(steady, key=label)(label)
                    await wait_for(lambda: len(runs) == 3, 10, "three runs")
                    server.pause()
                    try:
                        await asyncio.sleep(0.4 * timeout.total_seconds())
                    finally:
                        server.resume()

                    async def completed() -> bool:
                        states = {await shadow.task_state(label) for label in "abc"}
                        return states == {"completed"}

                    await wait_for(completed, 15, "every outcome to be recorded")
                finally:
                    worker.stop()
                    await asyncio.wait_for(running, 10)
    assert sorted(runs) == sorted(ended) == ["a", "b", "c"]
