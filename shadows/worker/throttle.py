"""The worker's gate before a run starts: ``Cooldown`` and ``RateLimit``.

Checked after the concurrency slots are taken (a run parked for a slot has not started,
so it must not count against a rate limit or open a cooldown) and before the task body.
One script call (THROTTLE) checks every limit and records the start atomically, at
Redis's clock, so that workers on several machines share one window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from shadows.behaviours.flow import Cooldown, RateLimit, milliseconds
from shadows.core.execution import Message
from shadows.core.keys import WORKER_GROUP, Keys
from shadows.core.link import Link
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff
from shadows.core.serialization import Payloads


class Limited(Protocol):
    """What the gate needs of a shadow."""

    @property
    def keys(self) -> Keys: ...

    @property
    def payloads(self) -> Payloads: ...

    def link(self) -> Link: ...


logger = logging.getLogger("shadows.worker")


@dataclass(slots=True)
class Gate:
    """What the gate decided: ``start``, ``drop`` (with why), ``postpone`` (to
    ``when_ms``) or ``lost`` (the message is no longer this worker's)."""

    decision: str
    reason: str = ""
    when_ms: int = 0


async def check(
    shadow: Limited,
    consumer: str,
    reconnect_cap: float,
    message: Message,
    task: str,
    arguments: Mapping[str, Any],
    cooldown: Cooldown | None,
    limits: list[RateLimit],
) -> Gate:
    """Ask Redis whether ``message`` may start now; raises ``KeyError`` for a scope that
    names no argument of the task."""
    keys = shadow.keys
    script_keys = [keys.stream]
    window = 0
    if cooldown is not None:
        script_keys.append(keys.cooldown(cooldown.bucket(task, arguments)))
        window = milliseconds(cooldown.window)
    args: list[str | int] = [
        WORKER_GROUP,
        consumer,
        message.message_id,
        1 if message.attempt == 1 else 0,
        window,
        len(limits),
    ]
    for limit in limits:
        script_keys.append(keys.rate(limit.bucket(task, arguments)))
        args += [limit.limit, milliseconds(limit.per)]
    throttle = shadow.link().flow.throttle
    backoff = Backoff(reconnect_cap)
    while True:
        try:
            reply = await throttle(keys=script_keys, args=args)
            break
        except CONNECTION_ERRORS as error:
            delay = backoff.next()
            logger.warning("Cannot check the flow limits (%s); retrying in %.1f s", error, delay)
            await asyncio.sleep(delay)
    code = int(reply[0])
    if code == 2:
        return Gate("start")
    if code == -1:
        return Gate("lost")
    if code == 0:
        assert cooldown is not None
        left = max(0, int(reply[1])) / 1000
        return Gate("drop", f"{cooldown.describe()}: in cooldown for {left:.3f} s more")
    frees = [int(value) for value in reply[1:]]
    full = [(limit, free) for limit, free in zip(limits, frees, strict=True) if free]
    dropping = [limit for limit, _ in full if limit.drop]
    if dropping:
        return Gate("drop", f"{dropping[0].describe()}: over the limit")
    when = max(free for _, free in full)
    return Gate("postpone", f"{full[0][0].describe()}: over the limit", when)


def postponed(shadow: Limited, message: Message, when_ms: int) -> Message:
    """``message`` again, due at ``when_ms`` (same attempt, no slots held)."""
    follow = replace(message, when_ms=when_ms, extra=dict(message.extra), holds=[])
    return shadow.payloads.seal(follow)
