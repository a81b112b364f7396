"""Handing messages back: acknowledging entries that carry nothing to run, and
returning received-but-unfinished messages to the stream at once (instead of leaving
them to wait out the redelivery timeout)."""

from __future__ import annotations

import logging

from redis.exceptions import ResponseError

from shadows.core.backend import Backend
from shadows.core.execution import Message, now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.core.reconnect import CONNECTION_ERRORS
from shadows.worker.shard_reader import entry_id
from shadows.worker.takeover import forget_consumer

logger = logging.getLogger("shadows.worker")


async def acknowledge(shadow: Backend, message_ids: list[str]) -> None:
    """Acknowledge and delete entries (ones deleted while pending have no fields)."""
    stream = shadow.keys.stream
    async with shadow.client.pipeline(transaction=False) as pipe:
        pipe.xack(stream, WORKER_GROUP, *message_ids)
        pipe.xdel(stream, *message_ids)
        await pipe.execute()


async def abandon(shadow: Backend, message: Message, outcome: str) -> None:
    """Acknowledge ``message`` and record ``outcome`` for its key without the COMPLETE
    script (which refused it): a last resort that does not check the claim is still this
    worker's, nor free concurrency slots (their leases run out)."""
    keys = shadow.keys
    await shadow.scripts.abandon(
        keys=[keys.stream, keys.run(message.key), keys.successor(message.key)],
        args=[
            WORKER_GROUP,
            message.message_id,
            outcome,
            now_ms(),
            max(1, int(shadow.execution_ttl.total_seconds())),
        ],
    )


async def release(
    shadow: Backend, consumer: str, message_ids: list[str], instance: str = ""
) -> None:
    """Put messages this consumer holds back on the stream for any worker (RELEASE);
    their deliveries to the worker run ``instance`` no longer count."""
    if not message_ids:
        return
    keys = shadow.keys
    # The task keys first: the script declares the run keys it touches.
    async with shadow.client.pipeline(transaction=False) as pipe:
        for message_id in message_ids:
            pipe.xrange(keys.stream, message_id, message_id)
        found = await pipe.execute()
    script_keys = [keys.stream]
    args: list[str] = [WORKER_GROUP, consumer, instance]
    for message_id, rows in zip(message_ids, found, strict=True):
        fields = rows[0][1] if rows else {}
        raw = fields.get(b"key", fields.get("key", b""))
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        script_keys.append(keys.run(key))
        args += [message_id, key]
    await shadow.scripts.release(keys=script_keys, args=args)


async def release_leftovers(shards: list[Backend], consumer: str, instance: str = "") -> None:
    """At shutdown, hand back what ``consumer`` holds but did not finish on each of
    ``shards``; a consumer that holds nothing on a shard leaves its group."""
    for shadow in shards:
        await _release_leftovers(shadow, consumer, instance)


async def _release_leftovers(shadow: Backend, consumer: str, instance: str) -> None:
    client = shadow.client
    stream = shadow.keys.stream
    try:
        pending = await client.xpending_range(
            stream, WORKER_GROUP, min="-", max="+", count=10_000, consumername=consumer
        )
        leftovers = [entry_id(entry["message_id"]) for entry in pending]  # type: ignore[arg-type]
        if leftovers:
            await release(shadow, consumer, leftovers, instance)
            logger.info("Released %d unfinished message(s) to other workers", len(leftovers))
        else:
            # Only if it still holds nothing (checked and deleted in one script).
            await forget_consumer(shadow, consumer)
    except CONNECTION_ERRORS as error:
        logger.warning(
            "Could not release unfinished messages (%s); they will be redelivered "
            "after the redelivery timeout",
            error,
        )
    except ResponseError:
        pass
