"""The worker's gate before a run starts: ``Cooldown`` and ``RateLimit``.

Checked after the concurrency slots are taken (a run parked for a slot has not started,
so it must not count against a rate limit or open a cooldown) and before the task body.
One script call (THROTTLE) checks every limit and records the start atomically, at
Redis's clock, so that workers on several machines share one window. The calls of the
runs a worker starts at about the same moment travel together, in one pipeline (one
round trip), rather than one round trip per run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from shadows.behaviours.flow import Cooldown, RateLimit, milliseconds
from shadows.core.execution import Message
from shadows.core.keys import WORKER_GROUP, Keys
from shadows.core.link import Link
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff
from shadows.core.serialization import Payloads
from shadows.core.urls import is_cluster


class Limited(Protocol):
    """What the gate needs of a shadow."""

    @property
    def url(self) -> str: ...

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
    limits: Sequence[RateLimit],
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
        message.key,
        1 if message.attempt == 1 else 0,
        window,
        len(limits),
    ]
    for limit in limits:
        bucket = limit.bucket(task, arguments)
        script_keys += [keys.rate(bucket), keys.rate_waiting(bucket)]
        args += [limit.limit, milliseconds(limit.per), 1 if limit.drop else 0]
    backoff = Backoff(reconnect_cap)
    while True:
        try:
            reply = await _gates(shadow).call(script_keys, args)
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
    until = int(reply[1])
    full = [limit for limit, flag in zip(limits, reply[2:], strict=True) if int(flag)]
    dropping = [limit for limit in full if limit.drop]
    if dropping:
        return Gate("drop", f"{dropping[0].describe()}: over the limit")
    return Gate("postpone", f"{full[0].describe()}: over the limit", until)


class Gates:
    """THROTTLE calls made at about the same moment, sent in one pipeline: the first
    call starts a send after the current loop tick, and calls made while a send is on
    the wire go in the next one. On a cluster (no scripts in pipelines) each goes alone."""

    def __init__(self, link: Link, alone: bool) -> None:
        self.link = link
        self.alone = alone
        self.waiting: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self.sender: asyncio.Task[None] | None = None

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        if self.alone:
            return await self.link.flow.throttle(keys=keys, args=args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((keys, args, future))
        if self.sender is None:
            self.sender = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0)  # the runs started in this tick join the first send
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    async with self.link.client.pipeline(transaction=False) as pipe:
                        for keys, args, _ in batch:
                            await self.link.flow.throttle(keys=keys, args=args, client=pipe)
                        replies = await pipe.execute(raise_on_error=False)
                except Exception as error:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                except BaseException:  # cancelled: so are the calls on the wire
                    for _, _, future in batch:
                        future.cancel()
                    raise
                for (_, _, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self.sender = None
            for _, _, future in self.waiting:  # cancelled with calls left: they fail
                if not future.done():
                    future.cancel()
            self.waiting = []


def _gates(shadow: Limited) -> Gates:
    """The batcher of THROTTLE calls on the shadow's current connection."""
    link = shadow.link()
    gates = link.flow.gates
    if gates is None:
        gates = link.flow.gates = Gates(link, is_cluster(shadow.url))
    assert isinstance(gates, Gates)
    return gates


def postponed(shadow: Limited, message: Message, when_ms: int) -> Message:
    """``message`` again, due at ``when_ms`` (same attempt, no slots held)."""
    follow = replace(message, when_ms=when_ms, extra=dict(message.extra), holds=[])
    return shadow.payloads.seal(follow)
