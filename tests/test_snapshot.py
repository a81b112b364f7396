"""Shadow.snapshot(): future, queued and running tasks and the workers, in pages."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

import shadows.operations.snapshot_pages
from conftest import wait_for
from shadows import Execution, Shadow, Worker
from shadows.core.serialization import PayloadError
from shadows.operations.snapshot import ArgumentsNotRead
from shadows.tasks import trace


async def greet(name: str, punctuation: str = "!") -> None:
    await asyncio.sleep(0)


async def test_an_empty_shadow(shadow: Shadow) -> None:
    before = datetime.now(UTC)
    snapshot = await shadow.snapshot()
    assert before <= snapshot.taken <= datetime.now(UTC)
    assert snapshot.total_tasks == 0
    assert list(snapshot.future) == list(snapshot.running) == list(snapshot.workers) == []


async def test_future_and_queued_tasks_come_soonest_first(shadow: Shadow) -> None:
    now = datetime.now(UTC)
    await shadow.add(greet, when=now + timedelta(hours=3), key="late")("Cy")
    await shadow.add(greet, when=now + timedelta(hours=1), key="soon")("Al", punctuation="?")
    await shadow.add(greet, key="ready")("Bo")
    await shadow.add("trace", when=now + timedelta(hours=2), key="middle")("hello")

    snapshot = await shadow.snapshot(arguments=True)
    assert snapshot.total_tasks == 4
    assert [task.key for task in snapshot.future] == ["ready", "soon", "middle", "late"]
    assert [task.state for task in snapshot.future] == [
        "queued",
        "scheduled",
        "scheduled",
        "scheduled",
    ]
    assert snapshot.count("queued") == 1
    assert snapshot.count("scheduled") == 3
    assert snapshot.count("running") == 0
    soon = snapshot.future[1]
    assert soon.function is greet and soon.function_name == "greet"
    assert soon.attempt == 1
    assert abs(soon.when - (now + timedelta(hours=1))) < timedelta(milliseconds=2)
    assert soon.args == ("Al",)
    assert soon.kwargs == {"punctuation": "?"}
    assert snapshot.future[0].args == ("Bo",)
    assert snapshot.future[2].function is trace
    assert soon.worker is None and soon.started is None
    assert soon.to_dict()["state"] == "scheduled"


async def test_tasks_read_like_executions_by_default(shadow: Shadow) -> None:
    # What the guides do: print each task's function name and arguments.
    await shadow.add(greet, when=datetime.now(UTC) + timedelta(hours=1), key="later")("Al")
    await shadow.add(greet, key="now")("Bo", punctuation="?")
    snapshot = await shadow.snapshot()
    lines = [f"{task.function.__name__}{task.args}{task.kwargs}" for task in snapshot.future]
    assert lines == ["greet('Bo',){'punctuation': '?'}", "greet('Al',){}"]
    assert [task.function for task in snapshot.future] == [greet, greet]
    assert [task.call_repr() for task in snapshot.future] == [
        "greet(..., punctuation=...)",
        "greet(...)",
    ]


async def test_a_task_not_registered_here_is_named_and_still_has_its_arguments(
    shadow: Shadow,
) -> None:
    await shadow.add(greet, key="elsewhere")("Cy")
    async with Shadow(name=shadow.name, url=shadow.url) as other:
        assert "greet" not in other.tasks
        [task] = (await other.snapshot()).future
        assert task.function == task.function_name == "greet"
        assert task.args == ("Cy",)
        assert task.call_repr() == "greet"
        assert task.to_dict()["function"] == "greet"


async def test_arguments_are_not_read_when_not_wanted(shadow: Shadow) -> None:
    await shadow.add(greet, when=datetime.now(UTC) + timedelta(hours=1))("secret")
    await shadow.add(greet)("also secret")
    snapshot = await shadow.snapshot(arguments=False)
    assert [task.function for task in snapshot.future] == [greet, greet]
    for task in snapshot.future:
        with pytest.raises(ArgumentsNotRead, match="arguments=True"):
            task.args  # noqa: B018
        assert task.call_repr() == "greet"


async def test_the_attempt_of_a_retry_is_shown(shadow: Shadow) -> None:
    when = datetime.now(UTC) + timedelta(minutes=5)
    await shadow.schedule(Execution(greet, ("Di",), {}, when, "retried", attempt=3))
    [task] = (await shadow.snapshot()).future
    assert (task.key, task.attempt) == ("retried", 3)


async def test_running_tasks_name_their_worker_and_start(shadow: Shadow) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def hold(label: str) -> None:
        started.set()
        await release.wait()

    shadow.register(hold)
    await shadow.add(hold, key="held")("first")
    await shadow.add(hold, key="waiting")("second")
    async with Worker(shadow, name="holder", concurrency=1) as worker:
        running = asyncio.create_task(worker.run_until_finished())
        try:
            await wait_for(started.is_set, message="the first task to start")

            async def listed() -> bool:
                return bool((await shadow.snapshot()).workers)

            await wait_for(listed, message="the worker's heartbeat")
            snapshot = await shadow.snapshot()
            [task] = snapshot.running
            assert (task.key, task.function, task.state) == ("held", hold, "running")
            assert task.worker == "holder"
            assert task.started is not None
            assert task.when <= task.started <= snapshot.taken + timedelta(milliseconds=5)
            assert (await shadow.snapshot(arguments=True)).running[0].args == ("first",)
            assert [t.key for t in snapshot.future] == ["waiting"]
            assert snapshot.future[0].state == "queued"
            assert snapshot.total_tasks == 2
            assert [w.name for w in snapshot.workers] == ["holder"]
        finally:
            release.set()
            await running
    assert (await shadow.snapshot()).total_tasks == 0


async def test_pages_with_equal_due_times_lose_nothing(
    shadow: Shadow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadows.operations.snapshot_pages, "PAGE", 3)
    base = datetime.now(UTC) + timedelta(hours=1)
    for i in range(20):  # four due times, five tasks each: ties span pages
        await shadow.add(greet, when=base + timedelta(seconds=i % 4), key=f"future-{i:02d}")(str(i))
    for i in range(7):
        await shadow.add(greet, key=f"ready-{i}")(str(i))
    snapshot = await shadow.snapshot(arguments=True)
    keys = [task.key for task in snapshot.future]
    assert len(keys) == len(set(keys)) == 27
    assert keys[:7] == [f"ready-{i}" for i in range(7)]
    whens = [task.when for task in snapshot.future]
    assert whens == sorted(whens)
    assert {task.args for task in snapshot.future[7:]} == {(str(i),) for i in range(20)}


async def test_a_task_seen_in_the_queue_and_on_the_stream_is_reported_once(
    shadow: Shadow,
) -> None:
    # What a snapshot can see when the scheduler moves a task between two of its pages.
    when = datetime.now(UTC) + timedelta(hours=1)
    execution = await shadow.add(greet, when=when, key="moving")("Ed")
    fields = execution.to_message(shadow.payloads).fields()
    await shadow.client.xadd(shadow.keys.stream, dict(zip(fields[::2], fields[1::2], strict=True)))
    [task] = (await shadow.snapshot()).future
    assert (task.key, task.state) == ("moving", "queued")


async def test_a_snapshot_of_100000_future_tasks_is_whole_and_in_order(
    redis_url: str, shadow_name: str
) -> None:
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        try:
            await _fill_future(shadow, 100_000)
            timings: dict[bool, float] = {}
            snapshots = {}
            for arguments in (False, True):
                begun = time.perf_counter()
                snapshots[arguments] = await shadow.snapshot(arguments=arguments)
                timings[arguments] = time.perf_counter() - begun
                assert snapshots[arguments].total_tasks == 100_000
            print(
                f"\nsnapshot of 100,000 future tasks: {timings[False]:.3f} s; "
                f"with arguments=True: {timings[True]:.3f} s"
            )
            # The figures are printed for the log; speed is the benchmark suite's business
            # (scripts/benchmarks/dashboard.py), not a timed assertion that fails on a busy
            # machine.
            for snapshot in snapshots.values():
                assert snapshot.future[0].key == "bulk-0"
                assert snapshot.future[-1].key == "bulk-99999"
                keys = [task.key for task in snapshot.future]
                assert len(set(keys)) == 100_000
            assert snapshots[True].future[0].args == ("payload",)
        finally:
            await shadow.clear()


async def _fill_future(shadow: Shadow, count: int) -> None:
    """``count`` future tasks, cloned in Redis from one scheduled through the API (adding
    them one by one would take the test far longer than the snapshot)."""
    when = datetime.now(UTC) + timedelta(days=1)
    await shadow.add("trace", when=when, key="bulk-0")("payload")
    script = shadow.client.register_script(
        """
        local prefix, count, first = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
        local fields = redis.call('HGETALL', prefix .. 'parked:bulk-0')
        local record = redis.call('HGETALL', prefix .. 'run:bulk-0')
        for i = 1, count - 1 do
          local key = 'bulk-' .. i
          for j = 1, #fields, 2 do
            if fields[j] == 'key' then fields[j + 1] = key end
          end
          redis.call('HSET', prefix .. 'parked:' .. key, unpack(fields))
          redis.call('HSET', prefix .. 'run:' .. key, unpack(record))
          redis.call('ZADD', KEYS[1], first + i, key)
        end
        return redis.call('ZCARD', KEYS[1])
        """
    )
    score = await shadow.client.zscore(shadow.keys.queue, "bulk-0")
    assert score is not None
    total = await script(keys=[shadow.keys.queue], args=[shadow.keys.prefix, count, int(score)])
    assert total == count


async def test_arguments_are_decoded_like_a_worker_would(url: str, shadow_name: str) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    try:
        async with Shadow(name=shadow_name, url=url, codec="json", signing_key="s3cret") as signed:
            await signed.add(greet, when=when, key="future")("Fay", punctuation=".")
            await signed.add(greet, key="ready")("Gus")
            snapshot = await signed.snapshot(arguments=True)
            assert [(t.key, t.args, t.kwargs) for t in snapshot.future] == [
                ("ready", ("Gus",), {}),
                ("future", ("Fay",), {"punctuation": "."}),
            ]
        # Another codec is never decoded, and a wrong key means a bad signature.
        async with Shadow(name=shadow_name, url=url) as pickled:
            for task in (await pickled.snapshot(arguments=True)).future:
                with pytest.raises(PayloadError, match="json codec"):
                    task.args  # noqa: B018
        async with Shadow(name=shadow_name, url=url, codec="json", signing_key="other") as wrong:
            for task in (await wrong.snapshot(arguments=True)).future:
                with pytest.raises(PayloadError, match="bad signature"):
                    task.kwargs  # noqa: B018
    finally:
        async with Shadow(name=shadow_name, url=url) as cleaner:
            await cleaner.clear()
