"""The producer's routing (issue 14): which shard each add, replace, cancel or read of a
key goes to, using the one rule of :mod:`shadows.core.routing`.

With one recorded shard count (the usual case) a key's shard is computed, with no I/O
beyond the layout announcement every few seconds. While the count changes (several counts
recorded, see :mod:`shadows.core.layout`), a write first looks for a live record of the
key in its shard under each other count and acts there: a key added under the old count
is not added again under the new one, and replace and cancel reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from shadows.behaviours.base import plan_for
from shadows.core.execution import current_holder
from shadows.core.routing import candidate_shards, needs_home, shard_for

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
    counts = layout.cached(announcing)
    if counts is None:
        counts = await layout.current(shadow.client, shadow.keys, shadow.shards, announcing)
    return counts


def plan_of(shadow: Router, function: str) -> Routed | None:
    """The plan of the task named ``function`` if it is registered here."""
    task = shadow.tasks.get(function)
    return plan_for(task) if task is not None else None


async def states(shadow: Router, key: str, shards: Sequence[int]) -> list[str | None]:
    """The state field of the run record of ``key`` in each of ``shards``."""
    return await _states(shadow, [(key, shard) for shard in shards])


async def _states(shadow: Router, places: Sequence[tuple[str, int]]) -> list[str | None]:
    """The state of the run record of each ``(key, shard)``: one pipeline (on a cluster,
    redis-py splits it by node)."""
    if not places:
        return []
    keys = shadow.keys
    async with shadow.client.pipeline(transaction=False) as pipe:
        for key, shard in places:
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
    if len(counts) == 1 or needs_home(plan):  # every add outside a change of the count
        return shard_for(shadow.shards, key, plan)
    return (await route_many(shadow, [key], [plan]))[0]


async def route_many(
    shadow: Router, keys: Sequence[str], plans: Sequence[Routed | bool | None]
) -> list[int]:
    """The shard of each write of ``keys`` (tasks with ``plans``): its shard under this
    count, unless a live record of the key sits in its shard under another recorded
    count (one pipeline of look-ups, only while several counts are recorded)."""
    counts = await layouts(shadow)
    routed: list[int] = []
    places: list[tuple[str, int]] = []
    asking: list[int] = []
    for index, (key, plan) in enumerate(zip(keys, plans, strict=True)):
        own = held(shadow, key)
        if own is not None:
            routed.append(own)
            continue
        own = shard_for(shadow.shards, key, plan)
        routed.append(own)
        if len(counts) == 1 or needs_home(plan):
            continue  # one layout, or a task that lives home under any count
        for shard in candidate_shards(key, counts[1:], home=False):
            if shard != own:
                places.append((key, shard))
                asking.append(index)
    moved: set[int] = set()
    for index, (_, shard), state in zip(asking, places, await _states(shadow, places), strict=True):
        if state in LIVE and index not in moved:
            routed[index] = shard
            moved.add(index)
    return routed


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
