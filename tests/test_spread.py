"""Issue 14: each shard's hash tag is chosen so that the shards of any shadow spread over
the masters of a cluster whose masters own contiguous, equal slot ranges (what
``redis-cli --cluster create`` builds), with no cluster query (shadows.core.spread)."""

from __future__ import annotations

import random
import string
import uuid
from collections import Counter

import pytest
from redis.crc import key_slot

from redis_topologies import Cluster
from shadows.core.keys import Keys
from shadows.core.spread import cell_of, cell_start, offset, shard_tag, slot_of


def random_names(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_.:|~"
    return ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(count)]


def masters_of(name: str, shards: int, masters: int) -> list[int]:
    """Which of ``masters`` equal ranges (redis-cli's cut) serves each shard."""
    return [cell_of(slot_of(shard_tag(name, i)), masters) for i in range(shards)]


def test_the_cut_is_redis_clis() -> None:
    # redis-cli --cluster create with 3 masters: 0-5460, 5461-10922, 10923-16383
    assert [cell_start(c, 3) for c in range(3)] == [0, 5461, 10923]
    assert [cell_of(s, 3) for s in (5460, 5461, 10922, 10923, 16383)] == [0, 1, 1, 2, 2]


def test_shard_zero_and_the_home_keys_are_unchanged() -> None:
    assert Keys("orders").prefix == Keys("orders", 0).prefix == "{orders}:"
    assert Keys("orders", 2).home_prefix == "{orders}:"
    tag = shard_tag("orders", 2)
    assert tag.startswith("orders|2~")
    assert Keys("orders", 2).prefix == f"{{{tag}}}:shard:"
    assert key_slot(Keys("orders", 2).stream.encode()) == slot_of(tag)


def test_offsets_spread_each_prefix_of_three_times_a_power_of_two() -> None:
    fractions = [a / d for a, d in (offset(i) for i in range(48))]
    assert len(set(fractions)) == 48
    for count in (3, 6, 12, 24, 48):
        assert sorted(fractions[:count]) == [k / count for k in range(count)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_shards_land_on_three_masters_for_any_name(seed: int) -> None:
    for name in random_names(300, seed):
        assert sorted(masters_of(name, 3, 3)) == [0, 1, 2], name


def test_six_shards_land_two_on_each_of_three_masters() -> None:
    for name in random_names(300, 4):
        assert Counter(masters_of(name, 6, 3)) == {0: 2, 1: 2, 2: 2}, name


@pytest.mark.parametrize("masters", [2, 3, 4, 5, 6, 7, 8, 9])
def test_three_six_and_twelve_shards_use_as_many_masters_as_they_can(masters: int) -> None:
    for name in random_names(100, masters):
        for shards in (3, 6, 12):
            placed = Counter(masters_of(name, shards, masters))
            assert len(placed) == min(shards, masters), (name, shards, placed)


def test_a_tag_is_found_in_a_few_hundred_tries_and_is_stable() -> None:
    tries = sorted(
        int(shard_tag(name, i).rsplit("~", 1)[1]) + 1
        for name in random_names(200, 5)
        for i in range(1, 6)
    )
    assert sum(tries) / len(tries) < 400
    assert shard_tag("orders", 1) == shard_tag("orders", 1)
    shard_tag.cache_clear()
    assert Keys("orders", 1).prefix == Keys("orders", 1).prefix  # recomputed, same


async def test_a_random_name_spreads_over_the_real_clusters_masters(
    redis_cluster: Cluster,
) -> None:
    for _ in range(5):
        name = f"spread-{uuid.uuid4().hex}"
        masters = {redis_cluster.master_for(Keys(name, i).stream).port for i in range(3)}
        assert len(masters) == 3, name
        six = Counter(redis_cluster.master_for(Keys(name, i).stream).port for i in range(6))
        assert sorted(six.values()) == [2, 2, 2], name
