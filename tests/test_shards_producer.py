"""The producer and operations side of sharding (issue 14), on both backends: every add,
replace, batch, cancel and read goes to the key's shard (tasks with global behaviours to
the home shard), and dead letters, snapshots, clear and the testing asserts cover every
shard. While two shard counts are recorded, a key added under the old one is found there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from shadows import (
    Agenda,
    ConcurrencyLimit,
    Debounce,
    ExecutionCancelled,
    Progress,
    Retry,
    Shadow,
    Worker,
)
from shadows.core.keys import Keys, shard_of
from shadows.core.layout import read_layouts
from shadows.testing import assert_no_tasks, assert_task_count, assert_task_scheduled
from shard_helpers import open_sharded

SHARDS = 3


async def plain(n: int) -> None: ...


async def limited(n: int, limit: ConcurrencyLimit = ConcurrencyLimit("n")) -> None: ...


async def broken(n: int, retry: Retry = Retry(attempts=1)) -> None:
    raise RuntimeError(f"broken {n}")


def later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def key_in(shard: int, label: str, shards: int = SHARDS) -> str:
    n = 0
    while shard_of(f"{label}-{n}", shards) != shard:
        n += 1
    return f"{label}-{n}"


@pytest.fixture
async def sharded(url: str, shadow_name: str) -> AsyncIterator[Shadow]:
    async with open_sharded(url, shadow_name, SHARDS) as opened:
        yield opened


async def where(shadow: Shadow, key: str, shards: int = SHARDS) -> list[int]:
    """The shards holding a run record of ``key``."""
    return [
        shard
        for shard in range(shards)
        if await shadow.client.exists(Keys(shadow.name, shard).run(key))
    ]


async def test_adds_land_in_their_keys_shard_and_global_behaviours_stay_home(
    sharded: Shadow,
) -> None:
    now_keys = [f"now-{i}" for i in range(12)]
    later_keys = [f"later-{i}" for i in range(12)]
    for key in now_keys:
        await sharded.add(plain, key=key)(1)
    for key in later_keys:
        await sharded.add(plain, when=later(), key=key)(2)
    for key in [*now_keys, *later_keys]:
        assert await where(sharded, key) == [shard_of(key, SHARDS)], key
    client, name = sharded.client, sharded.name
    lengths = [await client.xlen(Keys(name, s).stream) for s in range(SHARDS)]
    queued = [await client.zcard(Keys(name, s).queue) for s in range(SHARDS)]
    assert sum(lengths) == 12 and sum(queued) == 12
    assert len([n for n in lengths if n]) >= 2, lengths  # really spread
    for s in range(SHARDS):
        assert lengths[s] == len([k for k in now_keys if shard_of(k, SHARDS) == s])
    # A task with a concurrency limit lives home whatever its key.
    far = key_in(2, "limited")
    await limited_add(sharded, far)
    assert await where(sharded, far) == [0]
    # The layout records this producer's count.
    assert list(await read_layouts(client, sharded.keys)) == [SHARDS]


async def limited_add(shadow: Shadow, key: str) -> None:
    await shadow.add(limited, key=key)(1)


async def test_keys_stay_idempotent_and_replace_cancel_and_reads_find_them(
    sharded: Shadow,
) -> None:
    key = key_in(2, "reminder")
    first = await sharded.add(plain, when=later(), key=key)(1)
    again = await sharded.add(plain, key=key)(2)
    assert again.state is None or again.state.value != "queued"
    assert await sharded.schedule(sharded.caller(plain, None, key)(3)) == "exists"
    assert await where(sharded, key) == [2]
    assert await sharded.task_state(key) == "scheduled"
    assert (await first.refresh()).state is not None
    found = await sharded.get_execution(key)
    assert found is not None and found.state is not None and found.state.value == "scheduled"
    # replace acts in the shard: due now, so it moves from the queue to the stream
    await sharded.replace(plain, None, key)(4)
    shard = Keys(sharded.name, 2)
    assert await sharded.client.zcard(shard.queue) == 0
    assert await sharded.client.xlen(shard.stream) == 1
    assert await sharded.task_state(key) == "queued"
    assert await sharded.cancel(key)
    assert await sharded.task_state(key) == "cancelled"
    assert await sharded.client.xlen(shard.stream) == 0
    assert not await sharded.cancel(key)
    # a home task's record is found by key alone
    home = key_in(1, "limited")
    await limited_add(sharded, home)
    assert await sharded.task_state(home) == "queued"
    assert await sharded.cancel(home)
    assert await where(sharded, home) == [0]


async def test_a_batch_groups_its_adds_per_shard(sharded: Shadow) -> None:
    keys = [f"batched-{i}" for i in range(30)]
    async with sharded.batch(size=7) as batch:
        executions = [batch.add(plain, key=key)(i) for i, key in enumerate(keys)]
        batch.add(plain, key=keys[0])(99)  # the same key again: exists
        batch.add(plain, when=later(), key="batched-later")(1)
    assert batch.outcomes == ["queued"] * 30 + ["exists", "scheduled"]
    for key in keys:
        assert await where(sharded, key) == [shard_of(key, SHARDS)]
    total = sum([await sharded.client.xlen(Keys(sharded.name, s).stream) for s in range(SHARDS)])
    assert total == 30
    states = {(await e.refresh()).state for e in executions}
    assert {s.value for s in states if s is not None} == {"queued"}


async def test_snapshots_clear_and_asserts_cover_every_shard(sharded: Shadow) -> None:
    for i in range(9):
        await sharded.add(plain, key=f"ready-{i}")(i)
    for i in range(6):
        await sharded.add(plain, when=later(), key=f"future-{i}")(i)
    snapshot = await sharded.snapshot()
    assert len(snapshot.future) == 15
    assert {task.key for task in snapshot.future} == {
        *(f"ready-{i}" for i in range(9)),
        *(f"future-{i}" for i in range(6)),
    }
    await assert_task_count(sharded, 15, plain)
    await assert_task_scheduled(sharded, plain, 5)
    assert await sharded.clear() == 15
    for shard in range(SHARDS):
        keys = Keys(sharded.name, shard)
        assert await sharded.client.xlen(keys.stream) == 0
        assert await sharded.client.zcard(keys.queue) == 0
    await assert_no_tasks(sharded)


async def test_dead_letters_are_kept_in_their_shard_and_listed_together(sharded: Shadow) -> None:
    keys = [key_in(shard, "broken") for shard in range(SHARDS)]
    for n, key in enumerate(keys):
        await sharded.add(broken, key=key)(n)
    async with Worker(sharded) as worker:
        await worker.run_until_finished()
    for shard, key in enumerate(keys):
        assert await sharded.client.exists(Keys(sharded.name, shard).dead(key)), key
    listed = await sharded.failed()
    assert sorted(letter.key for letter in listed) == sorted(keys)
    letter = await sharded.failed_task(keys[2])
    assert letter is not None and "broken 2" in letter.error
    assert await sharded.retry_failed(keys[2]) == "queued"
    assert not await sharded.client.exists(Keys(sharded.name, 2).dead(keys[2]))
    assert await sharded.client.xlen(Keys(sharded.name, 2).stream) == 1
    assert await sharded.purge_failed(keys[1]) == 1
    assert [letter.key for letter in await sharded.failed()] == [keys[0]]
    assert await sharded.purge_failed() == 1
    assert await sharded.failed() == []


async def test_a_key_added_under_the_old_count_is_found_under_the_new(
    url: str, shadow_name: str, sharded: Shadow
) -> None:
    """1 -> 3: the old producer's keys (shard 0) are not added again by a new one, and
    replace and cancel reach them there; 3 -> 1 the other way round."""
    key = key_in(2, "moving")
    async with Shadow(name=shadow_name, url=url, shards=1) as old:
        await old.add(plain, when=later(), key=key)(1)
        assert await where(old, key) == [0]
        await sharded.add(plain, key=key)(2)  # exists under the old count: a no-op
        assert await where(sharded, key) == [0]
        async with sharded.batch() as batch:  # a batch looks there too
            batch.add(plain, key=key)(2)
            batch.add(plain, key="fresh-in-batch")(3)
        assert batch.outcomes == ["exists", "queued"]
        assert await where(sharded, key) == [0]
        assert await where(sharded, "fresh-in-batch") == [shard_of("fresh-in-batch", SHARDS)]
        assert sorted(await read_layouts(sharded.client, sharded.keys)) == [1, SHARDS]
        await sharded.replace(plain, later() + timedelta(hours=1), key)(3)
        assert await where(sharded, key) == [0]
        assert await sharded.task_state(key) == "scheduled"
        assert await sharded.cancel(key)
        assert await old.task_state(key) == "cancelled"
        # the other way: added under 3 (shard 2), an old producer finds it there
        other = key_in(2, "back")
        await sharded.add(plain, when=later(), key=other)(1)
        old.link().layout.read_at = float("-inf")  # as REFRESH_SECONDS later: read again
        await old.add(plain, key=other)(2)
        assert await where(old, other) == [2]
        assert await old.task_state(other) == "scheduled"
        assert await old.cancel(other)


async def reporting(progress: Progress = Progress()) -> None:
    await progress.set_total(5)
    await progress.increment(2)


async def test_progress_is_written_to_the_record_in_the_runs_shard(sharded: Shadow) -> None:
    key = key_in(2, "reporting")
    execution = await sharded.add(reporting, key=key)()
    async with Worker(sharded) as worker:
        await worker.run_until_finished()
    record = Keys(sharded.name, 2).run(key)
    assert await sharded.client.hget(record, "progress_total") == b"5"
    assert await sharded.client.hget(record, "progress_current") == b"2"
    assert await where(sharded, key) == [2]
    await execution.refresh()
    assert execution.progress.total == 5 and execution.progress.current == 2
    assert execution.state is not None and execution.state.value == "completed"


async def test_the_dashboard_reads_every_shard(sharded: Shadow) -> None:
    pytest.importorskip("starlette")
    from shadows.dashboard.failures import failed_page
    from shadows.dashboard.lookup import find_task
    from shadows.dashboard.pulse import read_pulse
    from shadows.dashboard.scheduled import scheduled_page

    for i in range(7):
        await sharded.add(plain, key=f"ready-{i}")(i)
    due = [later() + timedelta(minutes=i) for i in range(9)]
    for i, when in enumerate(due):
        await sharded.add(plain, when=when, key=f"future-{i}")(i)
    pulse = await read_pulse(sharded, 0)
    assert (pulse.ready, pulse.scheduled, pulse.running_count) == (7, 9, 0)
    first = await scheduled_page(sharded, 0, 4)
    assert [t.key for t in first.tasks] == [f"future-{i}" for i in range(4)]
    assert first.total == 9 and first.following == 4
    rest = await scheduled_page(sharded, 8, 4)
    assert [t.key for t in rest.tasks] == ["future-8"] and rest.following is None
    found = await scheduled_page(sharded, 0, 10, text="future-3")
    assert [t.key for t in found.tasks] == ["future-3"]
    far = key_in(2, "future-far")
    await sharded.add(plain, when=later(), key=far)(1)
    view = await find_task(sharded, far)
    assert view.state == "scheduled" and view.found_in == "queue"
    await sharded.clear()  # a worker runs until nothing is left, future tasks included
    keys = [key_in(shard, "broken") for shard in range(SHARDS)]
    for n, key in enumerate(keys):
        await sharded.add(broken, key=key)(n)
    async with Worker(sharded) as worker:
        await worker.run_until_finished()
    page = await failed_page(sharded, 0, 2)
    assert page.total == 3 and len(page.rows) == 2
    assert sorted(r.key for r in [*page.rows, *(await failed_page(sharded, 2, 2)).rows]) == sorted(
        keys
    )
    assert (await read_pulse(sharded, 0)).dead_letters == 3


async def doubled(n: int) -> int:
    return 2 * n


async def settled(n: int, debounce: Debounce = Debounce(timedelta(minutes=5))) -> None: ...


async def test_results_debounces_and_agendas_with_shards(sharded: Shadow) -> None:
    key = key_in(2, "doubled")
    execution = await sharded.add(doubled, key=key)(21)
    async with Worker(sharded) as worker:
        await worker.run_until_finished()
    assert await execution.get_result(timeout=10) == 42
    found = await sharded.get_execution(key)
    assert found is not None and await found.get_result(timeout=10) == 42
    # A debounced task lives home (its burst is a global bucket).
    burst = await sharded.add(settled, key=key_in(2, "settled"))(1)
    assert await where(sharded, burst.key) == [0]
    # An agenda's calls are spread by key like any batch.
    agenda = Agenda()
    for i in range(9):
        agenda.add(doubled, key=f"agenda-{i}")(i)
    scattered = await agenda.scatter(sharded, over=timedelta(hours=1))
    assert len(scattered) == 9
    for i in range(9):
        assert await where(sharded, f"agenda-{i}") == [shard_of(f"agenda-{i}", SHARDS)]


async def test_cancelling_a_task_running_outside_shard_0_stops_it(sharded: Shadow) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)
        finished.append("no")

    sharded.register(forever)
    key = key_in(2, "forever")
    execution = await sharded.add(forever, key=key)()
    async with Worker(sharded) as worker:
        running = asyncio.create_task(worker.run_until_finished())
        await asyncio.wait_for(started.wait(), 10)
        assert await sharded.task_state(key) == "running"
        feed = await sharded.client.xlen(sharded.keys.strikes)
        assert await sharded.cancel(key)
        # the mark in the shard's record, the wake-up on the home feed
        assert await sharded.client.xlen(sharded.keys.strikes) == feed + 1
        with pytest.raises(ExecutionCancelled):
            await execution.get_result(timeout=5)
        await asyncio.wait_for(running, 10)
    assert finished == []
    assert await sharded.task_state(key) == "cancelled"
    assert await where(sharded, key) == [2]
