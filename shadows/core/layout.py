"""The layout record: which shard counts are in use, so that N can change on a live system.

A global hash (``Keys.layout``, home prefix) maps each shard count ``N`` to when a
producer or worker running with it last announced itself (ms). While it holds one count,
every process agrees where each key lives. After a change of ``N`` it holds the old count
and the new one: workers read the union of the shards (0 .. max(N) - 1), so the old
shards drain and the new ones are read, and producers look for a key under the other
counts before adding it under their own (:func:`shadows.core.routing.candidate_shards`),
so a key added under the old count is not added again under the new one. An old count is
removed with ``shadows shards forget N`` once its shards hold no work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoPermissionError

from shadows.core.keys import Keys
from shadows.core.routing import all_shards, candidate_shards

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from shadows.core.backend import Backend
    from shadows.core.state import Source

#: How long (seconds) a process trusts the layout it read before announcing itself and
#: reading it again: a process running with an older count learns of a new one within it.
REFRESH_SECONDS = 5.0


def _counts(raw: dict[Any, Any]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for field, value in raw.items():
        try:
            count = int(field)
        except ValueError:
            continue
        if count >= 1:
            counts[count] = int(value)
    return counts


async def read_layouts(client: Redis | RedisCluster, keys: Keys) -> dict[int, int]:
    """The recorded shard counts: count -> last announced (ms)."""
    return _counts(await client.hgetall(keys.layout))


async def announce(client: Redis | RedisCluster, keys: Keys, shards: int) -> dict[int, int]:
    """Record that a process runs with ``shards`` shards now, and read every count."""
    now = int(time.time() * 1000)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(keys.layout, str(shards), now)
        pipe.hgetall(keys.layout)
        _, raw = await pipe.execute()
    counts = _counts(raw)
    counts[shards] = now
    return counts


async def forget(client: Redis | RedisCluster, keys: Keys, shards: int) -> bool:
    """Remove the count ``shards`` from the record (see ``shadows shards forget``)."""
    return bool(await client.hdel(keys.layout, str(shards)))


async def every_shard(backend: Backend) -> list[Keys]:
    """The keys of every shard that may hold work: those of the recorded counts and of
    this process's own (read, never announced: a reader may not write)."""
    counts = await read_layouts(backend.client, backend.keys)
    return [backend.keys.of_shard(i) for i in all_shards([*counts, backend.shards])]


async def key_shards(backend: Backend, key: str) -> list[Keys]:
    """The keys of every shard that may hold ``key`` (best guess first), read from the
    layout record: its shard under each recorded count and this one, and the home shard."""
    counts = ordered(backend.shards, await read_layouts(backend.client, backend.keys))
    return [backend.keys.of_shard(i) for i in candidate_shards(key, counts)]


def ordered(shards: int, counts: dict[int, int] | tuple[int, ...]) -> tuple[int, ...]:
    """``shards`` first, then the other recorded counts, newest announcement first."""
    if isinstance(counts, tuple):
        others = [n for n in counts if n != shards]
    else:
        others = sorted((n for n in counts if n != shards), key=lambda n: -counts[n])
    return (shards, *others)


class Layout:
    """What one connection knows of the recorded counts (see :data:`REFRESH_SECONDS`).

    Writers of work (add, replace) announce their count; readers and look-ups (cancel,
    reads by key, the dashboard) only read, so that they record no count of their own."""

    __slots__ = ("_pending", "announced_at", "counts", "read_at")

    def __init__(self) -> None:
        #: The counts in use, this process's first; empty until first read.
        self.counts: tuple[int, ...] = ()
        self.read_at = self.announced_at = float("-inf")
        self._pending: asyncio.Future[None] | None = None

    def cached(self, announcing: bool = True) -> tuple[int, ...] | None:
        """The counts when still fresh (no await: the path of every add), else ``None``."""
        return self.counts if self._fresh(announcing) else None

    def _fresh(self, announcing: bool) -> bool:
        now = time.monotonic()
        if not self.counts or now - self.read_at >= REFRESH_SECONDS:
            return False
        return not announcing or now - self.announced_at < REFRESH_SECONDS

    async def current(
        self, client: Redis | RedisCluster, keys: Keys, shards: int, announcing: bool = True
    ) -> tuple[int, ...]:
        """The counts in use (this one first), read again when stale; ``announcing``:
        this process writes work with ``shards``, which the record must show."""
        while not self._fresh(announcing):
            if self._pending is None:
                break
            with contextlib.suppress(Exception):
                await asyncio.shield(self._pending)  # the other reader's error is its own
        else:
            return self.counts
        future = self._pending = asyncio.get_running_loop().create_future()
        try:
            if announcing:
                try:
                    counts = await announce(client, keys, shards)
                    self.announced_at = time.monotonic()
                except NoPermissionError:  # a user that may not write the record
                    counts = await read_layouts(client, keys)
            else:
                counts = await read_layouts(client, keys)
            self.counts, self.read_at = ordered(shards, counts), time.monotonic()
        finally:
            self._pending = None
            future.set_result(None)
        return self.counts

    def shards(self) -> range:
        """Every shard that may hold work under the counts known now."""
        return all_shards(self.counts)


class ShardSource:
    """A shadow seen through one of its shards: reading an execution's record, watching
    it and waiting for its result use that shard's keys (an :class:`Execution` bound to
    a task outside the home shard is bound to one of these)."""

    __slots__ = ("keys", "name", "shadow")

    def __init__(self, shadow: Source, shard: int) -> None:
        self.shadow = shadow
        self.name = shadow.name
        self.keys = shadow.keys.of_shard(shard)

    @property
    def payloads(self) -> Any:
        return self.shadow.payloads

    @property
    def client(self) -> Redis | RedisCluster:
        return self.shadow.client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.shadow, name)


def on_shard(shadow: Source, shard: int) -> Source:
    """``shadow`` itself for the home shard, else its view through ``shard``."""
    return shadow if shard == 0 else ShardSource(shadow, shard)
