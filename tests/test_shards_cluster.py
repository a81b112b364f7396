"""The worker side of sharding on a real Redis Cluster (3 masters): a worker process of a
shadow spread over 3 shards, each shard's hash tag on a different master, drains work
placed on every shard, a worker killed mid-task on shard 2 is taken over, and every
script stays inside one slot (the cluster refuses cross-slot scripts)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import timedelta
from pathlib import Path

from conftest import wait_for
from processes import spawn_worker
from redis_topologies import Cluster, query
from shadows import ConcurrencyLimit, Perpetual, Shadow, Worker
from shadows.core.keys import WORKER_GROUP, Keys
from test_shards_worker import SHARDS, add_on, key_in
from worker_tasks import read_records, record_and_sleep


def spread_name(cluster: Cluster) -> str:
    """A fresh, random shadow name: its 3 shards are served by the 3 masters (the layout
    spreads them, shadows.core.spread; checked here so that every test relying on it says
    so when it does not hold)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    masters = {cluster.master_for(Keys(name, i).stream).port for i in range(SHARDS)}
    assert len(masters) == SHARDS, (name, masters)
    return name


def keys_on(port: int, prefix: str) -> list[str]:
    _, found = query(port, "SCAN", 0, "MATCH", f"{prefix}*", "COUNT", 10_000)
    return list(found)


async def drained(shadow: Shadow) -> bool:
    for shard in range(SHARDS):
        keys = Keys(shadow.name, shard)
        if await shadow.client.xlen(keys.stream) or await shadow.client.zcard(keys.queue):
            return False
        if (await shadow.client.xpending(keys.stream, WORKER_GROUP))["pending"]:
            return False
    return True


async def test_a_worker_process_drains_three_shards_on_three_masters(
    redis_cluster: Cluster, tmp_path: Path
) -> None:
    name = spread_name(redis_cluster)
    runs = tmp_path / "runs"
    env = {"SHADOW_SHARDS": str(SHARDS)}
    beats = ("--heartbeat-interval", "1s")  # a killed worker's entry lapses after 3 s, not 6 s
    workers = [
        spawn_worker(
            redis_cluster.url, name, "--name", label, *beats, log=tmp_path / f"{label}.log", env=env
        )
        for label in ("first", "second")
    ]
    try:
        async with Shadow(name=name, url=redis_cluster.url, shards=SHARDS) as shadow:
            keys = {}
            for shard in range(SHARDS):
                for n in range(5):
                    label = f"s{shard}-{n}"
                    keys[label] = await add_on(
                        shadow, shard, record_and_sleep, str(runs), label, 0.01,
                        key=key_in(shard, label),
                    )  # fmt: skip
            # the long one on shard 2, killed mid-run below (taken over 3 s after its
            # worker's last heartbeat)
            victim = await add_on(
                shadow, 2, record_and_sleep, str(runs), "victim", 1.5, key=key_in(2, "victim")
            )
            await wait_for(lambda: _started(runs, "victim"), 30, "the victim to start")
            [start] = [r for r in read_records(runs) if r[:2] == ["start", "victim"]]
            running = next(p for p in workers if p.pid == int(start[2]))
            running.send_signal(signal.SIGKILL)
            running.wait(10)
            survivor = next(p for p in workers if p is not running)
            await wait_for(lambda: _ended(runs, "victim"), 30, "the victim to run again")
            await wait_for(lambda: drained(shadow), 30, "every shard to drain")
            done = {r[1] for r in read_records(runs) if r[0] == "end"}
            assert done == set(keys) | {"victim"}
            assert survivor.poll() is None
            # each shard's records live on its own master
            for shard in range(SHARDS):
                prefix = Keys(name, shard).prefix
                master = redis_cluster.master_for(Keys(name, shard).stream)
                found = keys_on(master.port, prefix)
                assert Keys(name, shard).run(key_in(shard, f"s{shard}-0")) in found
                for other in redis_cluster.masters():
                    if other.port != master.port:
                        assert keys_on(other.port, prefix) == []
            assert await shadow.client.hget(Keys(name, 2).run(victim), "state") == b"completed"
    finally:
        for process in workers:
            process.kill()
            process.wait(10)
        async with Shadow(name=name, url=redis_cluster.url) as cleanup:
            for shard in range(SHARDS):
                prefix = Keys(name, shard).prefix
                master = redis_cluster.master_for(Keys(name, shard).stream)
                for key in keys_on(master.port, prefix):
                    await cleanup.client.delete(key)


def _started(runs: Path, label: str) -> bool:
    return any(r[:2] == ["start", label] for r in read_records(runs))


def _ended(runs: Path, label: str) -> bool:
    return any(r[:2] == ["end", label] for r in read_records(runs))


async def test_moves_between_shards_on_a_cluster(redis_cluster: Cluster) -> None:
    """The two steps that cross shards, each inside one slot: a concurrency-limited task
    left on shard 1 is moved home and runs once; after a shrink to one shard, a perpetual
    chain in shard 2 goes on in shard 0."""
    name = spread_name(redis_cluster)
    ran: list[str] = []

    async def limited(
        customer: str, limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1)
    ) -> None:
        ran.append(customer)

    async def plain(customer: str) -> None:
        raise AssertionError("not run")

    async def ticking(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10))) -> None:
        ran.append("tick")

    plain.__name__ = plain.__qualname__ = "limited"
    try:
        async with Shadow(name=name, url=redis_cluster.url, shards=SHARDS) as old:
            old.register(plain)
            old.register(ticking)
            key = await add_on(old, 1, plain, "c1")
            chain = await add_on(old, 2, ticking)
        async with Shadow(name=name, url=redis_cluster.url, shards=1) as new:
            new.register(limited)
            new.register(ticking)
            async with Worker(new) as worker:
                await asyncio.wait_for(worker.run_at_most({chain: 3}), 30)
            assert sorted(ran) == ["c1", "tick", "tick", "tick"]
            client = new.client
            assert await client.hget(Keys(name, 0).run(key), "state") == b"completed"
            assert not await client.exists(Keys(name, 1).run(key))
            assert await client.exists(Keys(name, 0).run(chain))
            for shard in (1, 2):
                assert await drained_shard(new, shard)
    finally:
        for shard in range(SHARDS):
            master = redis_cluster.master_for(Keys(name, shard).stream)
            found = keys_on(master.port, Keys(name, shard).prefix)
            if found:
                query(master.port, "DEL", *found)


async def drained_shard(shadow: Shadow, shard: int) -> bool:
    keys = Keys(shadow.name, shard)
    client = shadow.client
    return not (await client.xlen(keys.stream) or await client.zcard(keys.queue))
