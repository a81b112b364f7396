"""Handing messages back (shadows.worker.release): the last-resort acknowledgement, and
releasing held messages, with the keys they touch declared (both backends)."""

from __future__ import annotations

import asyncio

from conftest import wait_for
from redis_server import RedisProcess
from shadows import Shadow
from shadows.core.execution import Message
from shadows.core.keys import WORKER_GROUP
from shadows.worker.completions import Completions
from shadows.worker.reader import entries_of
from shadows.worker.release import abandon, release


async def noop() -> None:
    pass


async def received(shadow: Shadow, consumer: str) -> Message:
    await shadow.ensure_group()
    await shadow.add(noop, key="held")()
    reply = await shadow.client.xreadgroup(
        WORKER_GROUP, consumer, {shadow.keys.stream: ">"}, count=1
    )
    [(message_id, fields)] = entries_of(reply)
    return Message.parse(fields, message_id.decode())


async def test_abandon_acknowledges_and_records_the_outcome(shadow: Shadow) -> None:
    message = await received(shadow, "w1")
    await abandon(shadow, message, "failed")
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    pending = await shadow.client.xpending(shadow.keys.stream, WORKER_GROUP)
    assert pending["pending"] == 0
    assert await shadow.task_state("held") == "failed"
    assert 0 < await shadow.client.ttl(shadow.keys.run("held")) <= 3600 * 24 * 30


async def test_release_puts_a_held_message_back_for_any_worker(shadow: Shadow) -> None:
    message = await received(shadow, "w1")
    await release(shadow, "w2", [message.message_id])  # not w2's: left alone
    assert (await shadow.client.xpending(shadow.keys.stream, WORKER_GROUP))["pending"] == 1
    await release(shadow, "w1", [message.message_id])
    assert (await shadow.client.xpending(shadow.keys.stream, WORKER_GROUP))["pending"] == 0
    [(new_id, _)] = await shadow.client.xrange(shadow.keys.stream)
    assert new_id.decode() != message.message_id
    run = await shadow.client.hgetall(shadow.keys.run("held"))
    assert run[b"state"] == b"queued" and run[b"message"] == new_id


async def test_an_outage_met_while_settling_makes_the_worker_recover(
    shadow_name: str,
) -> None:
    """An acknowledgement written just before an outage may be lost (a failover): when
    the loop that settles outcomes meets one, the worker looks at its own pending list
    next (the read loop may not have met the outage at all)."""
    with RedisProcess() as server:
        async with Shadow(name=shadow_name, url=server.url) as shadow:
            outages: list[bool] = []
            completions = Completions(shadow, "w1", 0.2, outage=lambda: outages.append(True))
            completions.start()
            message = await received(shadow, "w1")
            await asyncio.to_thread(server.stop)
            settling = asyncio.create_task(completions.submit(message, "completed"))
            try:
                await wait_for(lambda: bool(outages), 20, "the outage to be reported")
                await asyncio.to_thread(server.start)
                assert await asyncio.wait_for(settling, 20) is True
            finally:
                settling.cancel()
                await completions.close()
