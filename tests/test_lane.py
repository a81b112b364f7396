"""The producer's lane: consecutive adds share one connection, and every failure of that
connection falls back on redis-py's ordinary path without losing or confusing an add
(real Redis only: the embedded backend does not use a lane)."""

from __future__ import annotations

import asyncio

from conftest import wait_for
from redis_server import RedisProcess
from shadows import Shadow


async def note(label: str) -> None: ...


async def test_concurrent_adds_all_land(redis_url: str, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await asyncio.gather(*(shadow.add(note, key=f"k{n}")(str(n)) for n in range(300)))
        assert await shadow.client.xlen(shadow.keys.stream) == 300
        assert {await shadow.task_state(f"k{n}") for n in range(300)} == {"queued"}
        await shadow.client.delete(shadow.keys.stream)


async def test_adds_go_on_after_redis_restarts() -> None:
    with RedisProcess(persistent=False) as server:
        async with Shadow(name="lane-restart", url=server.url) as shadow:
            await shadow.add(note, key="before")("x")
            server.restart()
            await shadow.add(note, key="after")("y")  # the lane's connection is stale
            assert await shadow.task_state("after") == "queued"
            assert await shadow.task_state("before") is None  # not persistent: gone


async def test_adds_go_on_after_redis_forgets_the_scripts(redis_url: str, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await shadow.add(note, key="first")("x")
        await shadow.client.script_flush()
        await shadow.add(note, key="second")("y")
        assert await shadow.task_state("second") == "queued"
        await shadow.client.delete(shadow.keys.stream, shadow.keys.run("first"))
        await shadow.client.delete(shadow.keys.run("second"))


async def test_a_cancelled_add_does_not_leave_its_reply_to_the_next_one() -> None:
    with RedisProcess(persistent=False) as server:
        async with Shadow(name="lane-cancel", url=server.url) as shadow:
            await shadow.add(note, key="warm-up")("x")  # the lane has its connection
            execution = shadow.caller(note, None, "once")("x")
            server.pause()
            try:
                adding = asyncio.create_task(shadow.schedule(execution))
                lane = shadow.link().lane
                await wait_for(lambda: lane is not None and lane._busy, 5, "send")
                adding.cancel()
                await asyncio.gather(adding, return_exceptions=True)
            finally:
                server.resume()

            # Redis runs the cancelled add once it resumes (it was sent); adding again must
            # see it, and not be answered with the first one's reply ("queued").
            async def stored() -> bool:
                return await shadow.task_state("once") == "queued"

            await wait_for(stored, 10, "the cancelled add, run by Redis")
            assert await shadow.schedule(execution) == "exists"
            assert await shadow.client.xlen(shadow.keys.stream) == 2
