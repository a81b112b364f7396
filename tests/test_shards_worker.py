"""The worker side of sharding (issue 14): a worker of a shadow spread over N shards reads
every shard fairly, runs and settles each message in its own shard, takes over and
schedules per shard, and moves home the home-shard tasks it finds elsewhere. Both
backends; the cluster test is in test_shards_cluster.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from conftest import wait_for
from shadows import ConcurrencyLimit, CurrentShadow, Perpetual, Retry, Shadow, Worker
from shadows.core.keys import WORKER_GROUP, Keys, shard_of
from shadows.worker.shards import ensure_group, of_shard
from shard_helpers import open_sharded

SHARDS = 3


def key_in(shard: int, label: str, shards: int = SHARDS) -> str:
    """A task key that routes to ``shard`` (a plain task's, under ``shards``)."""
    n = 0
    while shard_of(f"{label}-{n}", shards) != shard:
        n += 1
    return f"{label}-{n}"


async def add_on(
    shadow: Shadow, shard: int, function: Callable[..., Any], *args: Any, **options: Any
) -> str:
    """Add a task under a key the producer routes to ``shard`` (checked)."""
    key = options.pop("key", None) or key_in(shard, function.__name__)
    await shadow.add(function, key=key, **options)(*args)
    assert await shadow.client.exists(Keys(shadow.name, shard).run(key))
    return key


@pytest.fixture
async def sharded(url: str, shadow_name: str) -> AsyncIterator[Shadow]:
    async with open_sharded(url, shadow_name, SHARDS) as opened:
        yield opened


async def settled(shadow: Shadow, shards: int = SHARDS) -> None:
    """Every shard's stream empty, nothing pending, nothing queued."""
    for shard in range(shards):
        keys = Keys(shadow.name, shard)
        assert await shadow.client.xlen(keys.stream) == 0
        assert (await shadow.client.xpending(keys.stream, WORKER_GROUP))["pending"] == 0
        assert await shadow.client.zcard(keys.queue) == 0


async def test_a_worker_drains_tasks_spread_over_every_shard(sharded: Shadow) -> None:
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    sharded.register(note)
    expected = []
    for shard in range(SHARDS):
        for n in range(10):
            label = f"s{shard}-{n}"
            await add_on(sharded, shard, note, label, key=key_in(shard, label))
            expected.append(label)
    for shard in range(SHARDS):
        assert await sharded.client.xlen(Keys(sharded.name, shard).stream) == 10
    async with Worker(sharded, concurrency=4) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 30)
    assert sorted(ran) == sorted(expected)
    await settled(sharded)
    # each run record settled in its own shard
    for shard in range(SHARDS):
        key = key_in(shard, f"s{shard}-0")
        state = await sharded.client.hget(Keys(sharded.name, shard).run(key), "state")
        assert state == b"completed"
    # the worker announced its shard count in the layout record
    assert b"3" in await sharded.client.hkeys(sharded.keys.layout)


async def test_scheduled_tasks_in_every_shard_run_on_time(sharded: Shadow) -> None:
    started: dict[str, float] = {}

    async def timed(label: str) -> None:
        started[label] = time.time()

    sharded.register(timed)
    due = datetime.now(UTC) + timedelta(milliseconds=700)
    for shard in range(SHARDS):
        await add_on(sharded, shard, timed, f"s{shard}", when=due, key=key_in(shard, "timed"))
        assert await sharded.client.zcard(Keys(sharded.name, shard).queue) == 1
    worker = Worker(sharded, scheduling_resolution=timedelta(milliseconds=50))
    async with worker:
        running = asyncio.create_task(worker.run_forever())
        try:
            await wait_for(lambda: len(started) == SHARDS, 10, "a run in every shard")
        finally:
            worker.stop()
            await running
    for label, at in started.items():
        late = at - due.timestamp()
        assert -0.01 <= late < 0.5, f"{label} started {late:.3f} s after it was due"
    await settled(sharded)


async def test_a_dead_workers_messages_on_shards_1_and_2_are_taken_over(
    sharded: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    sharded.register(note)
    await add_on(sharded, 2, note, "victim")
    await add_on(sharded, 1, note, "other victim", key=key_in(1, "other"))
    # a worker that read them and died (never listed again: its heartbeat lapsed)
    for shard in (1, 2):
        stream = Keys(sharded.name, shard).stream
        await ensure_group(of_shard(sharded, shard))
        taken = await sharded.client.xreadgroup(WORKER_GROUP, "dead-one", {stream: ">"}, count=1)
        assert taken
    worker = Worker(
        sharded,
        heartbeat_interval=timedelta(milliseconds=50),
        redelivery_timeout=timedelta(minutes=5),  # so only the takeover can claim it
    )
    with caplog.at_level(logging.WARNING, logger="shadows.worker"):
        async with worker:
            running = asyncio.create_task(worker.run_forever())
            try:
                await wait_for(
                    lambda: sorted(ran) == ["other victim", "victim"], 10, "the dead's tasks"
                )
            finally:
                worker.stop()
                await running
    assert caplog.text.count("Took over 1 message(s) of workers whose heartbeat lapsed") == 2
    assert "Reclaimed" not in caplog.text
    await settled(sharded)


async def test_retries_and_perpetual_runs_stay_in_their_shard(sharded: Shadow) -> None:
    attempts: list[int] = []
    beats: list[int] = []

    async def flaky(retry: Retry = Retry(attempts=3)) -> None:
        attempts.append(retry.attempt)
        if retry.attempt < 3:
            raise RuntimeError("not yet")

    async def ticking(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10))) -> None:
        beats.append(len(beats))

    sharded.register(flaky)
    sharded.register(ticking)
    flaky_key = await add_on(sharded, 1, flaky)
    ticking_key = await add_on(sharded, 2, ticking)
    home = Keys(sharded.name, 0)
    async with Worker(sharded) as worker:
        await asyncio.wait_for(worker.run_at_most({ticking_key: 4}), 30)
    assert attempts == [1, 2, 3]
    assert len(beats) == 4
    client = sharded.client
    flaky_run = await client.hgetall(Keys(sharded.name, 1).run(flaky_key))
    assert flaky_run[b"state"] == b"completed" and flaky_run[b"attempt"] == b"3"
    assert await client.hget(Keys(sharded.name, 2).run(ticking_key), "state") is not None
    # nothing of theirs in the home shard (nor in each other's)
    for key in (flaky_key, ticking_key):
        assert not await client.exists(home.run(key))
    assert not await client.exists(Keys(sharded.name, 2).run(flaky_key))
    assert not await client.exists(Keys(sharded.name, 1).run(ticking_key))


async def test_a_successor_scheduled_from_inside_a_run_stays_in_its_shard(
    sharded: Shadow,
) -> None:
    links: list[int] = []
    key = key_in(1, "chain")

    async def chain(n: int, shadows: Shadow = CurrentShadow()) -> None:
        links.append(n)
        if n < 3:
            await shadows.add(chain, key=key)(n + 1)  # its own key: the run's successor

    sharded.register(chain)
    await add_on(sharded, 1, chain, 1, key=key)
    async with Worker(sharded) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 30)
    assert links == [1, 2, 3]
    client = sharded.client
    assert await client.hget(Keys(sharded.name, 1).run(key), "state") == b"completed"
    for shard in (0, 2):
        assert not await client.exists(Keys(sharded.name, shard).run(key))
    await settled(sharded)


async def test_a_home_task_found_on_shard_1_is_moved_home_and_runs_once(
    sharded: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    """An older producer (or an older declaration of the task) left a task with a
    concurrency limit on shard 1: the worker moves it home rather than run ACQUIRE
    across two hash tags."""
    ran: list[str] = []

    async def limited(
        customer: str, limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1)
    ) -> None:
        ran.append(customer)

    async def plain(customer: str) -> None:  # the declaration the old producer knew
        raise AssertionError("not run")

    plain.__name__ = plain.__qualname__ = "limited"
    async with Shadow(name=sharded.name, url=sharded.url, shards=SHARDS) as old:
        old.register(plain)
        key = await add_on(old, 1, plain, "c1")
    sharded.register(limited)
    with caplog.at_level(logging.WARNING, logger="shadows.worker"):
        async with Worker(sharded) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 30)
    assert ran == ["c1"]
    assert "from shard 1 to the home shard" in caplog.text
    client = sharded.client
    assert not await client.exists(Keys(sharded.name, 1).run(key))
    assert await client.hget(sharded.keys.run(key), "state") == b"completed"
    await settled(sharded)


async def test_a_flooded_shard_does_not_starve_another(sharded: Shadow) -> None:
    """Shard 1 holds 200 tasks, one slot runs at a time; a task added on shard 2 starts
    within a few reads, not after the flood."""
    order: list[str] = []

    async def work(label: str) -> None:
        order.append(label)
        await asyncio.sleep(0.005)

    sharded.register(work)
    for n in range(200):
        label = f"flood-{n}"
        await add_on(sharded, 1, work, label, key=key_in(1, label))
    worker = Worker(sharded, concurrency=1)
    async with worker:
        running = asyncio.create_task(worker.run_forever())
        try:
            await wait_for(lambda: len(order) >= 5, 10, "the flood to start")
            await add_on(sharded, 2, work, "lonely", key=key_in(2, "lonely"))
            flood_before = len(order)
            await wait_for(lambda: "lonely" in order, 10, "the other shard's task")
            behind = order.index("lonely") - flood_before
            assert behind <= SHARDS + 1, f"{behind} flood tasks ran first"
            assert len(order) < 200
        finally:
            worker.stop(force=True)
            await running


async def test_a_worker_reads_every_shard_of_the_counts_recorded(sharded: Shadow) -> None:
    """A worker started with shards=1 reads the shards a producer of shards=3 uses (the
    layout record), and records its own count beside it."""
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    sharded.register(note)
    for shard in range(SHARDS):
        await add_on(sharded, shard, note, f"s{shard}", key=key_in(shard, f"s{shard}"))
    async with Shadow(name=sharded.name, url=sharded.url, shards=1) as narrow:
        narrow.register(note)
        async with Worker(narrow) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 30)
        assert sorted(ran) == ["s0", "s1", "s2"]
        assert set(await narrow.client.hkeys(narrow.keys.layout)) == {b"1", b"3"}
    await settled(sharded)


async def test_the_queue_depth_metrics_add_up_every_shard(sharded: Shadow) -> None:
    async def note(label: str) -> None:
        pass

    sharded.register(note)
    later = datetime.now(UTC) + timedelta(hours=1)
    await add_on(sharded, 1, note, "a", when=later, key=key_in(1, "later"))
    await add_on(sharded, 2, note, "b", when=later, key=key_in(2, "later"))
    await add_on(sharded, 2, note, "c", key=key_in(2, "now"))
    worker = Worker(sharded)
    assert await worker.metrics.read_depths() == (1, 2)


async def test_one_shard_losing_its_data_is_noticed_and_its_running_task_restored(
    sharded: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    """Each shard has its own epoch: a node that lost one shard's keys (its stream, run
    records, epoch) while a task of that shard runs is noticed, and the run record is
    written back in that shard, so the task still settles (and places its retry)."""
    hold = asyncio.Event()
    attempts: list[int] = []

    async def flaky(retry: Retry = Retry(attempts=2)) -> None:
        attempts.append(retry.attempt)
        if retry.attempt == 1:
            await hold.wait()
            raise RuntimeError("once")

    sharded.register(flaky)
    key = await add_on(sharded, 1, flaky)
    shard = Keys(sharded.name, 1)
    worker = Worker(sharded)
    with caplog.at_level(logging.WARNING, logger="shadows.worker"):
        async with worker:
            running = asyncio.create_task(worker.run_forever())
            try:
                await wait_for(lambda: attempts == [1], 10, "the first attempt")
                await wait_for(lambda: sharded.client.exists(shard.epoch), 10, "the epoch")
                # shard 1's node loses its data; the home shard keeps its own
                found = [k async for k in sharded.client.scan_iter(match=f"{shard.prefix}*")]
                await sharded.client.delete(*found)
                assert await sharded.client.exists(sharded.keys.epoch)
                # noticed by the next look: the read loop's (its blocking read of shard
                # 1 ends with the stream) or this one, whichever comes first
                await worker.continuity.check()
                await wait_for(lambda: worker.continuity.losses == 1, 10, "the loss noticed")
                assert await sharded.client.hget(shard.run(key), "state") == b"running"
                hold.set()
                await wait_for(lambda: attempts == [1, 2], 10, "the retry, in shard 1")
                await wait_for(
                    lambda: _state(sharded, shard.run(key), b"completed"), 10, "its record"
                )
            finally:
                hold.set()
                worker.stop()
                await running
    assert worker.continuity.losses == 1
    assert "Redis lost the data of shadow" in caplog.text


async def _state(shadow: Shadow, run: str, state: bytes) -> bool:
    return await shadow.client.hget(run, "state") == state


async def test_a_task_no_worker_knows_is_handed_back_into_its_shard(sharded: Shadow) -> None:
    async def mystery() -> None:
        pass

    sharded.register(mystery)
    key = await add_on(sharded, 2, mystery)
    async with Shadow(name=sharded.name, url=sharded.url, shards=SHARDS) as other:
        worker = Worker(other, unknown_task_grace=timedelta(minutes=5))
        async with worker:
            running = asyncio.create_task(worker.run_forever())
            try:
                shard = Keys(sharded.name, 2)
                await wait_for(
                    lambda: sharded.client.hexists(shard.run(key), "unknown-since"),
                    10,
                    "the hand-back",
                )
            finally:
                worker.stop()
                await running
    assert await sharded.client.hget(shard.run(key), "state") in (b"scheduled", b"queued")
    assert not await sharded.client.exists(sharded.keys.run(key))


async def test_a_stopping_worker_hands_back_what_it_holds_in_every_shard(
    sharded: Shadow,
) -> None:
    started: list[str] = []

    async def slow(label: str) -> None:
        started.append(label)
        await asyncio.sleep(30)

    sharded.register(slow)
    for shard in (1, 2):
        await add_on(sharded, shard, slow, f"s{shard}", key=key_in(shard, f"slow{shard}"))
    worker = Worker(sharded)
    async with worker:
        running = asyncio.create_task(worker.run_forever())
        await wait_for(lambda: len(started) == 2, 10, "both tasks running")
        worker.stop(force=True)
        await running
    for shard in (1, 2):
        keys = Keys(sharded.name, shard)
        assert await sharded.client.xlen(keys.stream) == 1  # back on its own stream
        assert (await sharded.client.xpending(keys.stream, WORKER_GROUP))["pending"] == 0


async def test_a_stream_deleted_under_a_blocking_read_is_created_again(shadow: Shadow) -> None:
    """Redis ends a blocking read whose stream is deleted (a flush, or a node losing a
    shard's data) with an error of its own: the worker recreates the group and goes on."""
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    shadow.register(note)
    worker = Worker(shadow, minimum_check_interval=timedelta(seconds=2))
    async with worker:
        running = asyncio.create_task(worker.run_forever())
        try:
            await wait_for(lambda: shadow.client.exists(shadow.keys.stream), 10, "the group")
            blocking = worker._reader.reader(0)
            await wait_for(lambda: blocking._connection is not None, 10, "a blocking read")
            await shadow.client.delete(shadow.keys.stream)
            await wait_for(lambda: shadow.client.exists(shadow.keys.stream), 10, "the group")
            await shadow.add(note)("after")
            await wait_for(lambda: ran == ["after"], 10, "a task after the deletion")
            assert not running.done()
        finally:
            worker.stop()
            await running


async def test_follow_ups_move_to_their_keys_shard_under_the_workers_count(
    sharded: Shadow,
) -> None:
    """After shrinking 3 -> 1, a perpetual chain and a retry that were placed in shard 2
    go on in shard 0 (their shard with one shard), so shard 2 drains and its count can be
    forgotten; nothing runs twice."""
    beats: list[int] = []
    attempts: list[int] = []

    async def ticking(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10))) -> None:
        beats.append(len(beats))

    async def flaky(retry: Retry = Retry(attempts=2)) -> None:
        attempts.append(retry.attempt)
        if retry.attempt == 1:
            raise RuntimeError("once")

    sharded.register(ticking)
    sharded.register(flaky)
    chain = await add_on(sharded, 2, ticking)
    retried = await add_on(sharded, 2, flaky)
    async with Shadow(name=sharded.name, url=sharded.url, shards=1) as narrow:
        narrow.register(ticking)
        narrow.register(flaky)
        async with Worker(narrow) as worker:
            await asyncio.wait_for(worker.run_at_most({chain: 3}), 30)
    assert len(beats) == 3
    assert attempts == [1, 2]
    old, home = Keys(sharded.name, 2), Keys(sharded.name, 0)
    client = sharded.client
    assert await client.xlen(old.stream) == 0 and await client.zcard(old.queue) == 0
    assert await client.hget(home.run(retried), "state") == b"completed"
    assert await client.hget(home.run(retried), "attempt") == b"2"
    assert await client.hget(home.run(chain), "state") is not None
    assert await client.hget(old.run(chain), "state") == b"completed"


async def test_one_blocking_read_of_every_shard_keeps_the_surplus_pending(
    sharded: Shadow,
) -> None:
    """On one server an idle worker blocks with one XREADGROUP of every shard's stream;
    what a second shard delivered in the same reply is not lost: it waits in the
    consumer's pending list and the next read takes it back."""

    async def note(label: str) -> None:
        pass

    if isinstance(sharded.client, RedisCluster):
        pytest.skip("a cluster blocks with one read per shard (test_shards_cluster.py)")
    sharded.register(note)
    worker = Worker(sharded)
    reader = worker._reader
    await reader.shards.announce()
    for shard in (1, 2):
        await add_on(sharded, shard, note, f"s{shard}", key=key_in(shard, f"s{shard}"))
    readers = [reader.reader(shard) for shard in range(SHARDS)]
    for one in readers:
        one.recover = False
    entries, origin, shard = await reader._block_together(readers, 10, asyncio.Event())
    assert (len(entries), origin, shard) == (1, "fresh", 1)
    assert readers[2].recover and not readers[1].recover
    again, origin, shard = await reader.next(10, set(), False, asyncio.Event())
    assert (len(again), origin, shard) == (1, "held", 2)
    pending = await sharded.client.xpending(Keys(sharded.name, 2).stream, WORKER_GROUP)
    assert pending["pending"] == 1
    await reader.close()
