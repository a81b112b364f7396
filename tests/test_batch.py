"""Adding many tasks at once with ``shadows.batch()``."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shadows import BatchError, Shadow, Worker

seen: Counter[int] = Counter()


async def count(n: int) -> None:
    seen[n] += 1


@pytest.fixture(autouse=True)
def clear_seen() -> None:
    seen.clear()


async def test_a_batch_writes_everything_once(shadow: Shadow) -> None:
    # pipelines of 250 = script calls of 100, 100 and 50 tasks; the last pipeline is short
    async with shadow.batch(size=250) as batch:
        executions = [batch.add(count)(n) for n in range(560)]
        assert len(batch) == 560
        assert await shadow.client.xlen(shadow.keys.stream) == 0  # nothing sent yet
    assert batch.outcomes == ["queued"] * 560
    assert len({e.key for e in executions}) == 560
    assert await shadow.client.xlen(shadow.keys.stream) == 560
    async with Worker(shadow, concurrency=50) as worker:
        await worker.run_until_finished()
    assert seen == Counter(range(560))


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


async def test_a_batch_whose_later_pipeline_fails_reports_what_was_written(
    shadow: Shadow,
) -> None:
    """Pipelines of 250 tasks (script calls of 100, 100, 50); the run record of task 380,
    in the second pipeline's second call, is not a hash, so Redis refuses that call."""
    await shadow.client.set(shadow.keys.run("t380"), "not a run record")
    with pytest.raises(BatchError) as raised:
        async with shadow.batch(size=250) as batch:
            executions = [batch.add(count, key=f"t{n}")(n) for n in range(600)]
    error = raised.value
    assert isinstance(error.__cause__, ResponseError)
    assert "WRONGTYPE" in str(error.__cause__)
    # the first pipeline, and the calls of the second that Redis answered
    assert error.outcomes[:350] == ["queued"] * 350
    assert error.outcomes[350:450] == [None] * 100  # the refused call (100 tasks)
    assert error.outcomes[450:500] == ["queued"] * 50
    assert error.outcomes[500:] == [None] * 100  # the third pipeline was not sent
    assert [e.key for e in error.unconfirmed] == [
        e.key for e in executions[350:450] + executions[500:]
    ]
    assert str(error).startswith("400 of 600 adds of the batch were written; the other 200")
    assert batch.outcomes == []  # only complete sends are listed there

    assert await shadow.task_state("t0") == "queued"
    assert await shadow.task_state("t499") == "queued"
    assert await shadow.task_state("t500") is None  # never sent
    # A refused call may have written its first tasks: unconfirmed is not "not written".
    # Adding the unconfirmed ones again is safe: the keys are idempotent.
    await shadow.client.delete(shadow.keys.run("t380"))
    async with shadow.batch() as again:
        for execution in error.unconfirmed:
            again.add(count, key=execution.key)(*execution.args)
    assert again.outcomes.count("exists") == 30  # t350..t379, written before the refusal
    assert again.outcomes.count("queued") == 170
    assert await shadow.client.xlen(shadow.keys.stream) == 600


async def test_a_batch_that_cannot_reach_redis_reports_nothing_written(shadow_name: str) -> None:
    from redis_server import RedisProcess

    with RedisProcess() as server:
        async with Shadow(name=shadow_name, url=server.url) as shadow:
            batch = shadow.batch()
            executions = [batch.add(count)(n) for n in range(3)]
            server.stop()
            with pytest.raises(BatchError) as raised:
                await batch.send()
            assert raised.value.outcomes == [None, None, None]
            assert raised.value.unconfirmed == executions
            assert isinstance(raised.value.__cause__, RedisConnectionError)
            assert len(batch) == 0  # handed over in the error, not kept for a resend
