"""The producer's routing (issue 14): which shard each add, replace, cancel or read of a
key goes to, using the one rule of :mod:`shadows.core.routing`.

With one recorded shard count (the usual case) a key's shard is computed, with no I/O
beyond the layout announcement every few seconds. While the count changes (several counts
recorded, see :mod:`shadows.core.layout`), a write first looks for a live record of the
key in its shard under each other count and acts there: a key added under the old count
is not added again under the new one, and replace and cancel reach it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from shadows.behaviours.base import plan_for
from shadows.core.execution import current_holder
from shadows.core.routing import candidate_shards, needs_home, shard_for
from shadows.core.urls import is_cluster

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from shadows.core.keys import Keys
    from shadows.core.link import Link
    from shadows.core.routing import Routed

#: The states of a run record whose key is taken (adding it again does nothing).
LIVE = frozenset({"scheduled", "queued", "running"})


class Router(Protocol):
    """What routing needs of a shadow (no import of it: no cycle)."""

    @property
    def url(self) -> str: ...

    @property
    def keys(self) -> Keys: ...

    @property
    def shards(self) -> int: ...

    @property
    def client(self) -> Redis | RedisCluster: ...

    @property
    def tasks(self) -> Mapping[str, Callable[..., Any]]: ...

    def link(self) -> Link: ...


async def layouts(shadow: Router, announcing: bool = True) -> tuple[int, ...]:
    """The shard counts in use, this shadow's first (``announcing``: this shadow writes
    work, so its count is recorded)."""
    layout = shadow.link().layout
    return await layout.current(shadow.client, shadow.keys, shadow.shards, announcing)


def plan_of(shadow: Router, function: str) -> Routed | None:
    """The plan of the task named ``function`` if it is registered here."""
    task = shadow.tasks.get(function)
    return plan_for(task) if task is not None else None


async def states(shadow: Router, key: str, shards: Sequence[int]) -> list[str | None]:
    """The state field of the run record of ``key`` in each of ``shards``."""
    keys = shadow.keys
    if not shards:
        return []
    if len(shards) == 1 or is_cluster(shadow.url):  # a cluster pipeline is per node anyway
        raw = await asyncio.gather(
            *(shadow.client.hget(keys.of_shard(s).run(key), "state") for s in shards)
        )
    else:
        async with shadow.client.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.hget(keys.of_shard(shard).run(key), "state")
            raw = await pipe.execute()
    return [_text(value) for value in raw]


def held(shadow: Router, key: str) -> int | None:
    """The shard of the run of ``key`` this code runs inside, if any: that run's
    successor, or its cancellation, goes to the shard its message came from."""
    holder = current_holder.get()
    if holder is None or holder.key != key or holder.shadow != shadow.keys.name:
        return None
    return holder.shard


async def route(shadow: Router, key: str, plan: Routed | bool | None) -> int:
    """The shard a write of ``key`` (a task with ``plan``) goes to."""
    if (shard := held(shadow, key)) is not None:
        return shard
    counts = await layouts(shadow)
    own = shard_for(shadow.shards, key, plan)
    if len(counts) == 1 or needs_home(plan):
        return own  # one layout, or a task that lives home under any count
    others = [s for s in candidate_shards(key, counts[1:], home=False) if s != own]
    for shard, state in zip(others, await states(shadow, key, others), strict=True):
        if state in LIVE:
            return shard
    return own


async def route_many(
    shadow: Router, keys: Sequence[str], plans: Sequence[Routed | None]
) -> list[int]:
    """:func:`route` for many keys (a batch): one look-up round while the count changes."""
    counts = await layouts(shadow)
    owns = [shard_for(shadow.shards, key, plan) for key, plan in zip(keys, plans, strict=True)]
    if len(counts) == 1:
        return owns
    return list(
        await asyncio.gather(
            *(
                route(shadow, key, plan) if not needs_home(plan) else _at(own)
                for key, plan, own in zip(keys, plans, owns, strict=True)
            )
        )
    )


async def _at(shard: int) -> int:
    return shard


async def locate(shadow: Router, key: str, counts: Sequence[int] | None = None) -> int:
    """The shard holding the record of ``key`` when its task is not known: among its
    shard under each recorded count and the home shard, the one with a live record,
    else one with any record, else its shard under this count."""
    if (shard := held(shadow, key)) is not None:
        return shard
    if counts is None:
        counts = await layouts(shadow, announcing=False)
    candidates = candidate_shards(key, counts) if shadow.shards > 1 or len(counts) > 1 else (0,)
    if len(candidates) == 1:
        return candidates[0]
    found = await states(shadow, key, candidates)
    for shard, state in zip(candidates, found, strict=True):
        if state in LIVE:
            return shard
    for shard, state in zip(candidates, found, strict=True):
        if state is not None:
            return shard
    return candidates[0]


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value
