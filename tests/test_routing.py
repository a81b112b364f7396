"""The routing rule of a sharded shadow (issue 14): one function decides a task's shard."""

from __future__ import annotations

from datetime import timedelta

from shadows import ConcurrencyLimit
from shadows.behaviours.base import plan_for
from shadows.behaviours.flow import Cooldown, Debounce, RateLimit
from shadows.core.keys import shard_of
from shadows.core.routing import all_shards, candidate_shards, needs_home, shard_for


async def plain(x: int) -> None: ...


async def limited(x: int, limit: ConcurrencyLimit = ConcurrencyLimit("x")) -> None: ...


async def cooled(cooldown: Cooldown = Cooldown(timedelta(seconds=1))) -> None: ...


async def rated(rate: RateLimit = RateLimit(2, timedelta(seconds=1))) -> None: ...


async def debounced(debounce: Debounce = Debounce(timedelta(seconds=1))) -> None: ...


def test_plain_tasks_spread_by_key_and_global_behaviours_stay_home() -> None:
    keys = [f"key-{i}" for i in range(200)]
    plan = plan_for(plain)
    assert not needs_home(plan)
    shards = {shard_for(3, key, plan) for key in keys}
    assert shards == {0, 1, 2}
    assert all(shard_for(3, key, plan) == shard_of(key, 3) for key in keys)
    for function in (limited, cooled, rated, debounced):
        home = plan_for(function)
        assert needs_home(home), function
        assert {shard_for(3, key, home) for key in keys} == {0}
    assert {shard_for(1, key, plan) for key in keys} == {0}


def test_candidates_cover_every_layout_and_the_home_shard() -> None:
    key = next(k for k in (f"k{i}" for i in range(100)) if shard_of(k, 3) == 2)
    assert candidate_shards(key, [3]) == (2, 0)
    assert candidate_shards(key, [3], home=False) == (2,)
    assert candidate_shards(key, [3, 1]) == (2, 0)
    assert list(all_shards([1, 3])) == [0, 1, 2]
    assert list(all_shards([])) == [0]


async def test_the_layout_record_keeps_every_announced_count(redis_url: str) -> None:
    from redis.asyncio import Redis

    from shadows.core.keys import Keys
    from shadows.core.layout import Layout, announce, forget, ordered, read_layouts

    keys = Keys("layout-test-shadow")
    client = Redis.from_url(redis_url)
    try:
        await client.delete(keys.layout)
        assert await read_layouts(client, keys) == {}
        first = await announce(client, keys, 1)
        assert list(first) == [1]
        both = await announce(client, keys, 3)
        assert sorted(both) == [1, 3]
        assert ordered(1, both) == (1, 3)
        assert await Layout().current(client, keys, 3) == (3, 1)
        assert await forget(client, keys, 1)
        assert list(await read_layouts(client, keys)) == [3]
        assert await client.exists(keys.layout)  # a global key: the home prefix
        assert keys.of_shard(2).layout == keys.layout == "{layout-test-shadow}:layout"
    finally:
        await client.delete(keys.layout)
        await client.aclose()
