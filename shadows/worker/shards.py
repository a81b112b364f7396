"""The shards a worker serves (issue 14): shard views and the recorded layouts.

A shadow spread over ``N`` shards has ``N`` streams, queues and schedules, each under its
own hash tag (see :mod:`shadows.core.keys`). The worker's steps are written against one
:class:`~shadows.core.backend.Backend`; :func:`of_shard` hands them the same shadow with
the keys of another shard, so every step runs per shard, inside one slot.

A worker reads the union of every shard count in use: its own and each one recorded in
the layout record (``{name}:layout``, announced every heartbeat), so that the shards of an
old ``N`` are drained after ``N`` shrinks and new shards are read once a producer of a
larger ``N`` appears.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from shadows.core.keys import WORKER_GROUP, Keys
from shadows.core.layout import announce

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from shadows.core.backend import Backend
    from shadows.core.scripts import Scripts
    from shadows.core.serialization import Payloads

logger = logging.getLogger("shadows.worker")


def gone(error: ResponseError) -> bool:
    """Whether ``error`` says a shard's stream or group vanished (Redis lost that shard's
    data, or it was flushed): ``NOGROUP``, or a blocking read ended by the deletion
    (Redis's words, and the ``memory://`` server's)."""
    text = str(error)
    return any(sign in text for sign in _GONE)


_GONE = ("NOGROUP", "the stream key no longer exists", "requires the key to exist")


class ShardView:
    """A shadow seen through the keys of one of its shards (everything else is the
    shadow's own: client, scripts, codecs, settings)."""

    def __init__(self, shadow: Backend, shard: int) -> None:
        self._shadow = shadow
        self._keys = shadow.keys.of_shard(shard)

    @property
    def name(self) -> str:
        return self._shadow.name

    @property
    def url(self) -> str:
        return self._shadow.url

    @property
    def keys(self) -> Keys:
        return self._keys

    @property
    def shards(self) -> int:
        return self._shadow.shards

    @property
    def client(self) -> Redis | RedisCluster:
        return self._shadow.client

    @property
    def scripts(self) -> Scripts:
        return self._shadow.scripts

    @property
    def payloads(self) -> Payloads:
        return self._shadow.payloads

    @property
    def execution_ttl(self) -> timedelta:
        return self._shadow.execution_ttl

    @property
    def dead_letter_ttl(self) -> timedelta:
        return self._shadow.dead_letter_ttl

    @property
    def dead_letter_limit(self) -> int:
        return self._shadow.dead_letter_limit

    @property
    def heartbeat_interval(self) -> timedelta:
        return self._shadow.heartbeat_interval

    @property
    def missed_heartbeats(self) -> int:
        return self._shadow.missed_heartbeats


def of_shard(shadow: Backend, shard: int) -> Backend:
    """``shadow`` with the keys of ``shard`` (``shadow`` itself when they are its own)."""
    if shadow.keys.shard == shard:
        return shadow
    return ShardView(shadow, shard)


async def ensure_group(shadow: Backend) -> None:
    """Create the stream of ``shadow``'s shard and its consumer group if missing."""
    try:
        await shadow.client.xgroup_create(shadow.keys.stream, WORKER_GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


class Shards:
    """The shards one worker reads: ``0 .. max(own N, every recorded N) - 1``."""

    def __init__(self, shadow: Backend, own: int) -> None:
        self.shadow = shadow
        #: This worker's own shard count (its shadow's ``shards``).
        self.own = own
        #: How many shards it reads now (grows when a larger ``N`` is recorded, shrinks
        #: once an old one is forgotten).
        self.count = own
        self._views: dict[int, Backend] = {0: shadow}
        #: Shards whose consumer group this worker has made sure of.
        self._grouped: set[int] = set()

    def view(self, shard: int) -> Backend:
        """The shadow with the keys of ``shard`` (kept: views are used per message)."""
        found = self._views.get(shard)
        if found is None:
            found = self._views[shard] = ShardView(self.shadow, shard)
        return found

    def all(self) -> list[Backend]:
        """A view of every shard read now, shard 0 first."""
        return [self.view(shard) for shard in range(self.count)]

    async def prepare(self) -> None:
        """Create the consumer group of every shard read (once per shard and run)."""
        for shard in range(self.count):
            if shard not in self._grouped:
                await ensure_group(self.view(shard))
                self._grouped.add(shard)

    def forget_groups(self) -> None:
        """The groups may be gone (Redis lost its data): make sure of them again."""
        self._grouped.clear()

    async def announce(self) -> None:
        """Record this worker's ``N`` in the layout record and read the union of every
        ``N`` recorded (called every heartbeat)."""
        recorded = await announce(self.shadow.client, self.shadow.keys, self.own)
        count = max(self.own, *recorded)
        if count != self.count:
            logger.info(
                "Shadow %s: reading %d shard(s) now (own %d, recorded %s)",
                self.shadow.name,
                count,
                self.own,
                ", ".join(map(str, sorted(recorded))) or "none",
            )
            self.count = count
        await self.prepare()
