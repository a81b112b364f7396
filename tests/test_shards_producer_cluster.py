"""The producer side of sharding on a real Redis Cluster (3 masters): with each shard's
hash tag on a different master, adds (one by one and in a batch), replace and cancel go
to the key's shard, so the work lands on three masters; snapshots, dead letters and clear
cover them all, and every script stays inside one slot (the cluster refuses others)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from redis_topologies import Cluster
from shadows import Shadow
from shadows.core.keys import Keys, shard_of
from test_shards_cluster import keys_on, spread_name

SHARDS = 3


async def plain(n: int) -> None: ...


async def test_work_lands_on_three_masters(redis_cluster: Cluster) -> None:
    name = spread_name(redis_cluster)
    masters = [redis_cluster.master_for(Keys(name, s).stream).port for s in range(SHARDS)]
    assert len(set(masters)) == SHARDS
    later = datetime.now(UTC) + timedelta(hours=1)
    async with Shadow(name=name, url=redis_cluster.url, shards=SHARDS) as shadow:
        try:
            for i in range(15):
                await shadow.add(plain, key=f"one-{i}")(i)
            async with shadow.batch() as batch:
                for i in range(15):
                    batch.add(plain, when=later, key=f"batched-{i}")(i)
            assert batch.outcomes == ["scheduled"] * 15
            for shard, port in enumerate(masters):
                prefix = Keys(name, shard).prefix
                found = keys_on(port, prefix)
                keys = [k for k in (f"one-{i}" for i in range(15)) if shard_of(k, SHARDS) == shard]
                later_keys = [
                    k for k in (f"batched-{i}" for i in range(15)) if shard_of(k, SHARDS) == shard
                ]
                assert {f"{prefix}run:{k}" for k in [*keys, *later_keys]} <= set(found)
                for other in set(masters) - {port}:
                    assert not keys_on(other, prefix)  # a shard lives on its master alone
            assert sum(1 for port in masters if keys_on(port, Keys(name, 0).prefix)) == 1
            key = next(k for k in (f"batched-{i}" for i in range(15)) if shard_of(k, SHARDS) == 2)
            await shadow.replace(plain, None, key)(99)
            assert await shadow.task_state(key) == "queued"
            assert await shadow.cancel(key)
            assert await shadow.task_state(key) == "cancelled"
            snapshot = await shadow.snapshot()
            assert len(snapshot.future) == 29
            assert await shadow.failed() == []
            assert await shadow.clear() == 29
            for shard in range(SHARDS):
                assert await shadow.client.zcard(Keys(name, shard).queue) == 0
        finally:
            for shard in range(SHARDS):
                prefix = Keys(name, shard).prefix
                found = [k async for k in shadow.client.scan_iter(match=f"{prefix}*")]
                for key in found:
                    await shadow.client.delete(key)
