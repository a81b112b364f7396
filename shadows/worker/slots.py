"""Taking concurrency slots for a message, in Redis, for all its limits at once."""

from __future__ import annotations

import asyncio
import logging

from shadows.core.backend import Backend
from shadows.core.execution import Message, now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff

logger = logging.getLogger("shadows.worker")


class Revoked(Exception):
    """The key of a message about to take its slots was cancelled meanwhile."""


async def acquire(
    shadow: Backend,
    consumer: str,
    message: Message,
    slots: list[tuple[str, int]],
    lease_ms: int,
    reconnect_cap: float,
    instance: str = "",
) -> bool | None:
    """Take a slot in each pool for ``message``, all or none (the ACQUIRE script).

    ``True``: taken (recorded on the message, renewed with its claim, released with its
    acknowledgement). ``None``: a pool is full; the message has been parked until a slot
    frees (its delivery to the worker run ``instance`` no longer counts). ``False``: the
    message is no longer ``consumer``'s. Waits out Redis outages.
    """
    keys = shadow.keys
    script_keys = [keys.stream, keys.queue, keys.run(message.key), keys.parked(message.key)]
    for slot, _ in slots:
        script_keys += [keys.concurrency(slot), keys.waiting(slot)]
    args: list[str | bytes | int] = [
        WORKER_GROUP,
        consumer,
        message.message_id,
        message.key,
        now_ms(),
        lease_ms,
        instance,
        len(slots),
        *(maximum for _, maximum in slots),
        *message.fields(),
    ]
    backoff = Backoff(reconnect_cap)
    while True:
        try:
            result = await shadow.scripts.acquire(keys=script_keys, args=args)
            break
        except CONNECTION_ERRORS as error:
            delay = backoff.next()
            logger.warning("Cannot take a concurrency slot (%s); retrying in %.1f s", error, delay)
            await asyncio.sleep(delay)
    code = int(result[0])
    if code == -2:
        raise Revoked(message.key)
    if code == 1:
        message.holds = [slot for slot, _ in slots]
        return True
    return None if code == 0 else False
