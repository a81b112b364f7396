"""Where a worker's next messages come from, in order of priority.

1. Its own pending list, after a start or a reconnection: messages delivered to this
   consumer that it never ran (a lost reply, a restart under the same name, the surplus
   of a read that woke on several shards at once).
2. Messages other consumers left unacknowledged: at once when their worker's heartbeat
   lapsed (:mod:`takeover`), else after the redelivery timeout (XAUTOCLAIM).
3. New messages (XREADGROUP ``>``), without blocking; once every shard came back empty,
   a blocking read: on one server one XREADGROUP of every shard's stream; on a cluster
   one per shard (they may live on different nodes, and one command cannot name keys of
   several slots), the first to return waking the others with ``CLIENT UNBLOCK``.

A batch always comes from one shard (:data:`Batch`): the START, COMPLETE and RELEASE
calls of its messages then touch one hash tag. Each read starts at the next shard in
turn, so one flooded shard cannot starve another: a message waiting on any shard is read
within as many reads as there are shards. A shadow of one shard reads exactly as before
sharding (same commands). See :mod:`shard_reader` for one shard's reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from datetime import timedelta

from redis.asyncio.cluster import RedisCluster

from shadows.core.backend import Backend
from shadows.core.deliveries import new_instance
from shadows.core.reconnect import CONNECTION_ERRORS
from shadows.worker.shard_reader import CLAIM_CALLS as CLAIM_CALLS
from shadows.worker.shard_reader import FRESH as FRESH
from shadows.worker.shard_reader import HELD as HELD
from shadows.worker.shard_reader import Entry as Entry
from shadows.worker.shard_reader import ShardReader, entries_by_stream
from shadows.worker.shard_reader import entries_of as entries_of
from shadows.worker.shard_reader import entry_id as entry_id
from shadows.worker.shards import Shards
from shadows.worker.takeover import Takeover

logger = logging.getLogger("shadows.worker")

#: Entries of one shard, their origin (:data:`FRESH` or :data:`HELD`) and the shard.
Batch = tuple[list[Entry], str, int]


class StreamReader:
    """Reads messages for one consumer from every shard of a shadow."""

    def __init__(
        self,
        shadow: Backend,
        consumer: str,
        redelivery_timeout: timedelta,
        block: float,
        claim_every: float,
        shards: Shards | None = None,
    ) -> None:
        self.shadow = shadow
        self.consumer = consumer
        self.redelivery_timeout = redelivery_timeout
        self.block = block
        self.claim_every = claim_every
        self.shards = shards or Shards(shadow, 1)
        self._readers: dict[int, ShardReader] = {}
        #: The shard the next read starts at (turns every read).
        self._turn = 0
        #: When the last read of new messages was sent (their claim clock started then).
        self.sent_at = 0.0
        #: Claims the messages of workers whose heartbeat lapsed (set by the worker).
        self.takeover: Takeover | None = None
        self._taking_over = False
        #: The worker run that deliveries are counted for (new at each run; see
        #: :mod:`shadows.core.deliveries`).
        self.instance = new_instance()
        self.reader(0)

    def reader(self, shard: int) -> ShardReader:
        """The reader of ``shard`` (made on first use: the shard count can grow)."""
        found = self._readers.get(shard)
        if found is None:
            found = self._readers[shard] = ShardReader(
                self.shards.view(shard),
                self.consumer,
                self.redelivery_timeout,
                self.block,
                self.claim_every,
            )
            found.prune_after = self._readers[0].prune_after if shard else found.prune_after
        return found

    def _turned(self) -> list[ShardReader]:
        """The readers of every shard read now, starting at the next one in turn."""
        count = self.shards.count
        start = self._turn % count
        self._turn = start + 1
        return [self.reader((start + i) % count) for i in range(count)]

    @property
    def recover(self) -> bool:
        """Whether some shard's pending list of this consumer is to be looked at."""
        return any(reader.recover for reader in self._readers.values())

    @recover.setter
    def recover(self, value: bool) -> None:
        for reader in self._readers.values():
            reader.recover = value

    @property
    def prune_after(self) -> float:
        """A consumer idle this long (seconds) with nothing pending is a dead worker's."""
        return self._readers[0].prune_after

    @prune_after.setter
    def prune_after(self, value: float) -> None:
        for reader in self._readers.values():
            reader.prune_after = value

    async def close(self) -> None:
        for reader in self._readers.values():
            await reader.close()

    async def next(
        self, free: int, skip: Collection[str], block: bool, wake: asyncio.Event
    ) -> Batch:
        """Up to ``free`` messages of one shard, their origin and the shard; ``skip``
        holds the refs of the messages this worker runs (:attr:`Message.ref`).

        A blocking read returns early (empty) once ``wake`` is set.
        """
        readers = self._turned()
        for reader in readers:
            if reader.recover:
                entries = await reader.own_pending(free, skip)
                if len(entries) <= free:
                    reader.recover = False
                if entries:
                    return entries[:free], HELD, reader.shard
        try:
            return await self._deliver(readers, free, block, wake)
        except CONNECTION_ERRORS:
            # A delivery may have been made, its reply lost: take it back at once.
            self.recover = True
            raise

    async def _deliver(
        self, readers: list[ShardReader], free: int, block: bool, wake: asyncio.Event
    ) -> Batch:
        if self.takeover is not None and (self._taking_over or self.takeover.due()):
            self._taking_over = False
            for reader in readers:
                taken = await reader.take_over(self.takeover, free)
                if taken:
                    # other shards may hold more of the lapsed workers' messages: look
                    # again at the next read rather than after the takeover's interval
                    self._taking_over = len(readers) > 1
                    return taken, HELD, reader.shard
        for reader in readers:
            entries = await reader.reclaim(free)
            if entries:
                return entries, HELD, reader.shard
        for reader in readers:
            entries = await reader.read_now(free)
            self.sent_at = reader.sent_at
            if entries:
                return entries, FRESH, reader.shard
        if not block or wake.is_set():
            return [], HELD, readers[0].shard
        if len(readers) == 1:
            entries = await readers[0].blocking_read(free, wake)
            self.sent_at = readers[0].sent_at
            return entries, FRESH, readers[0].shard
        if not isinstance(self.shadow.client, RedisCluster):
            return await self._block_together(readers, free, wake)
        return await self._block_on_all(readers, free, wake)

    async def _block_together(
        self, readers: list[ShardReader], free: int, wake: asyncio.Event
    ) -> Batch:
        """On one server, one blocking read of every shard's stream (on the home reader's
        connection); entries of more than one shard at once: the first in turn is the
        batch, the others wait in this consumer's pending list (taken back by START)."""
        home = self.reader(0)
        by_stream = {reader.shadow.keys.stream: reader for reader in readers}
        try:
            reply = await home.blocking_read_of(list(by_stream), free, wake)
        except BaseException:
            self.recover = True  # it may have delivered on any of the shards
            raise
        self.sent_at = home.sent_at
        found = entries_by_stream(reply)
        batch: Batch | None = None
        for reader in readers:
            entries = found.get(reader.shadow.keys.stream)
            if not entries:
                continue
            if batch is None:
                batch = (entries, FRESH, reader.shard)
            else:
                reader.recover = True
        return batch or ([], FRESH, readers[0].shard)

    async def _block_on_all(
        self, readers: list[ShardReader], free: int, wake: asyncio.Event
    ) -> Batch:
        """Block on every shard at once; the first read to return (or ``wake``) ends the
        others. Entries that other shards delivered meanwhile stay in this consumer's
        pending list, taken back (through START) by the next reads."""
        woken = asyncio.Event()
        reads = {
            asyncio.ensure_future(reader.blocking_read(free, woken)): reader for reader in readers
        }
        for read in reads:
            read.add_done_callback(lambda _: woken.set())
        waking = asyncio.ensure_future(wake.wait())
        waking.add_done_callback(lambda _: woken.set())
        try:
            await asyncio.wait(reads)
        finally:
            waking.cancel()
            for read in reads:
                read.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*reads, return_exceptions=True)
        found: Batch | None = None
        failure: BaseException | None = None
        for read, reader in reads.items():
            error = read.exception() if not read.cancelled() else None
            if error is not None:
                failure = failure or error
                continue
            entries = [] if read.cancelled() else read.result()
            if not entries:
                continue
            if found is None:
                self.sent_at = reader.sent_at
                found = (entries, FRESH, reader.shard)
            else:
                reader.recover = True  # its surplus waits in this consumer's pending list
        if failure is not None:
            if found is not None:
                self.reader(found[2]).recover = True
            raise failure
        return found or ([], FRESH, readers[0].shard)
