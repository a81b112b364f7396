"""Adding many tasks at once with ``shadows.batch()``."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from shadows import Shadow, Worker

seen: Counter[int] = Counter()


async def count(n: int) -> None:
    seen[n] += 1


@pytest.fixture(autouse=True)
def clear_seen() -> None:
    seen.clear()


async def test_a_batch_writes_everything_once(shadow: Shadow) -> None:
    # pipelines of 250 = script calls of 100, 100 and 50 tasks; the last pipeline is short
    async with shadow.batch(size=250) as batch:
        executions = [batch.add(count)(n) for n in range(2560)]
        assert len(batch) == 2560
        assert await shadow.client.xlen(shadow.keys.stream) == 0  # nothing sent yet
    assert batch.outcomes == ["queued"] * 2560
    assert len({e.key for e in executions}) == 2560
    assert await shadow.client.xlen(shadow.keys.stream) == 2560
    async with Worker(shadow, concurrency=50) as worker:
        await worker.run_until_finished()
    assert seen == Counter(range(2560))


async def test_keys_stay_idempotent_within_and_across_batches(shadow: Shadow) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await shadow.add(count, key="already")(0)
    async with shadow.batch() as batch:
        batch.add(count, key="twice")(1)
        batch.add(count, key="twice")(2)
        batch.add(count, key="already")(3)
        batch.add(count, when=later, key="future")(4)
        batch.add("count", key="by-name")(5)
    assert batch.outcomes == ["queued", "exists", "exists", "scheduled", "queued"]
    assert await shadow.client.zcard(shadow.keys.queue) == 1
    async with Worker(shadow) as worker:
        await worker.run_at_most({"future": 0})
    assert seen == Counter({0: 1, 1: 1, 5: 1})


async def test_a_failing_block_writes_nothing(shadow: Shadow) -> None:
    async def fill_then_fail() -> None:
        async with shadow.batch() as batch:
            batch.add(count)(1)
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await fill_then_fail()
    assert await shadow.client.xlen(shadow.keys.stream) == 0


async def test_bad_arguments_fail_at_the_add(shadow: Shadow) -> None:
    async with shadow.batch() as batch:
        with pytest.raises(TypeError, match=r"count\(\)"):
            batch.add(count)(1, 2)  # type: ignore[call-arg]
        batch.add(count)(3)
    assert batch.outcomes == ["queued"]


async def test_send_within_the_block(shadow: Shadow) -> None:
    async with shadow.batch() as batch:
        batch.add(count)(1)
        assert await batch.send() == ["queued"]
        batch.add(count)(2)
    assert batch.outcomes == ["queued", "queued"]
    assert await shadow.client.xlen(shadow.keys.stream) == 2
