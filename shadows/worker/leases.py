"""Keeping the claims on running messages alive, and fencing the ones that are lost.

A worker owns a message while it sits in its pending list and has been touched within the
redelivery timeout; after that, any other worker may claim it (XAUTOCLAIM). This loop
renews the claims of running messages every quarter of the timeout (and extends the
leases of their concurrency slots); a renewal that could not reach Redis is tried again
at the next check (a tenth of the timeout), not a quarter later: brief outages that each
swallow one renewal (Redis restarting) must not add up to the fencing limit. A task whose
claim could not be confirmed for 70% of the timeout (Redis unreachable, say) is cancelled
locally, before any other worker may claim its message at 100%: two runs of one message
never overlap because a worker lost touch. A task whose message another worker has
claimed is cancelled at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from shadows.core.backend import Backend
from shadows.core.cancellation import CancelGuard
from shadows.core.execution import Message, now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.core.message import ref_of, split_ref
from shadows.core.reconnect import CONNECTION_ERRORS
from shadows.worker.shard_reader import entry_id

logger = logging.getLogger("shadows.worker")


class Leases:
    """The claims of one worker's running messages."""

    def __init__(
        self,
        shard: Callable[[int], Backend],
        consumer: str,
        redelivery: float,
        message: Callable[[str], Message | None],
        lose: Callable[[str, str], None],
    ) -> None:
        #: The shadow with the keys of a shard (claims are renewed per shard).
        self.shard = shard
        self.consumer = consumer
        self.redelivery = redelivery
        self._message = message
        self._lose = lose
        #: When each running message's claim was last confirmed (monotonic, send time),
        #: by :attr:`Message.ref`.
        self.confirmed: dict[str, float] = {}
        #: The last renewal could not reach Redis: the next one is due at the next check.
        self.unreached = False

    def track(self, message_id: str, since: float) -> None:
        self.confirmed[message_id] = since

    def forget(self, message_id: str) -> None:
        self.confirmed.pop(message_id, None)

    async def run(self) -> None:
        tick = max(self.redelivery / 10, 0.005)
        renew_every = self.redelivery / 4
        limit = self.redelivery * 0.7
        last_renewal = time.monotonic()
        renewal: asyncio.Task[None] | None = None
        guard = CancelGuard()
        try:
            while True:
                await asyncio.sleep(tick)
                guard.check()
                now = time.monotonic()
                for message_id, confirmed in list(self.confirmed.items()):
                    if now - confirmed > limit:
                        self._lose(message_id, "its claim could not be renewed in time")
                due = now - last_renewal >= (tick if self.unreached else renew_every)
                if due and self.confirmed and (renewal is None or renewal.done()):
                    last_renewal = now
                    renewal = asyncio.create_task(self._renew(list(self.confirmed)))
        finally:
            if renewal is not None:
                renewal.cancel()

    async def _renew(self, refs: list[str]) -> None:
        by_shard: dict[int, list[str]] = {}
        for ref in refs:
            by_shard.setdefault(split_ref(ref)[0], []).append(ref)
        self.unreached = False
        for shard, some in sorted(by_shard.items()):
            await self._renew_shard(shard, some)

    async def _renew_shard(self, shard: int, refs: list[str]) -> None:
        """RENEW on one shard (only home-shard messages hold concurrency slots)."""
        sent = time.monotonic()
        view = self.shard(shard)
        keys = view.keys
        script_keys = [keys.stream]
        args: list[str | int] = [
            WORKER_GROUP,
            self.consumer,
            now_ms(),
            int(self.redelivery * 1000),
        ]
        for ref in refs:
            message = self._message(ref)
            holds = message.holds if message else []
            script_keys += [keys.concurrency(slot) for slot in holds]
            args += [split_ref(ref)[1], message.key if message else "", len(holds)]
        try:
            # Not bounded by a timeout of its own: cancelling a command in flight can hand
            # its half-closed connection to the next command (redis-py's cluster client
            # then fails with "'NoneType' object has no attribute 'writelines'", seen
            # killing a worker in a chaos run); the socket timeout bounds it instead.
            lost = await view.scripts.renew(keys=script_keys, args=args)
        except CONNECTION_ERRORS as error:
            self.unreached = True
            logger.warning("Could not renew the claims of %d task(s): %s", len(refs), error)
            return
        lost_refs = {ref_of(shard, entry_id(message_id)) for message_id in lost}
        for ref in refs:
            if ref in lost_refs:
                self._lose(ref, "another worker has claimed its message")
            elif ref in self.confirmed:
                self.confirmed[ref] = sent
