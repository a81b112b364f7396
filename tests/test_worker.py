"""The worker, in-process, on real Redis and on memory://."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.exceptions

from conftest import LoopStalls, wait_for
from shadows import Retry, Shadow, Worker
from shadows.core.execution import Message, now_ms, to_ms
from shadows.core.keys import WORKER_GROUP
from shadows.worker.shard_reader import raw_entries


def at(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_immediate_and_future_tasks_run_and_never_early(shadow: Shadow) -> None:
    ran: dict[str, float] = {}

    async def remember(label: str) -> None:
        ran[label] = time.time()

    later = at(0.6)
    await shadow.add(remember)("now")
    await shadow.add(remember, when=later)("later")
    async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=50)) as worker:
        await worker.run_until_finished()
    assert set(ran) == {"now", "later"}
    assert ran["later"] >= later.timestamp()
    assert ran["now"] < later.timestamp()


async def test_tasks_run_with_their_arguments(shadow: Shadow) -> None:
    seen: list[Any] = []

    async def collect(a: int, b: str, *, c: list[int]) -> None:
        seen.append((a, b, c))

    await shadow.add(collect)(1, "two", c=[3])
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert seen == [(1, "two", [3])]


async def test_sync_functions_run_in_a_thread(shadow: Shadow) -> None:
    import threading

    threads: list[str] = []

    def blocking(value: int) -> None:
        time.sleep(0.01)
        threads.append(threading.current_thread().name)

    await shadow.add(blocking)(1)
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert len(threads) == 1
    assert threads[0] != threading.main_thread().name


async def test_concurrency_is_never_exceeded_and_reached(shadow: Shadow) -> None:
    running = 0
    highest = 0

    async def busy() -> None:
        nonlocal running, highest
        running += 1
        highest = max(highest, running)
        await asyncio.sleep(0.02)
        running -= 1

    for _ in range(40):
        await shadow.add(busy)()
    async with Worker(shadow, concurrency=5) as worker:
        await worker.run_until_finished()
    assert highest == 5


async def test_a_freed_slot_is_refilled_without_waiting_a_check_interval(shadow: Shadow) -> None:
    """With a 30 s check interval, 20 tasks at concurrency 2 would take minutes if the
    worker slept an interval before refilling a slot; it must take well under a second."""
    done = 0

    async def quick() -> None:
        nonlocal done
        await asyncio.sleep(0.001)
        done += 1

    for _ in range(20):
        await shadow.add(quick)()
    async with Worker(
        shadow, concurrency=2, minimum_check_interval=timedelta(seconds=30)
    ) as worker:
        await asyncio.wait_for(worker.run_until_finished(), timeout=10)
    assert done == 20


async def test_retries_carry_attempt_numbers_and_wait_the_delay(shadow: Shadow) -> None:
    attempts: list[tuple[int, float]] = []

    async def flaky(retry: Retry = Retry(attempts=3, delay=timedelta(milliseconds=200))) -> None:
        attempts.append((retry.attempt, time.monotonic()))
        raise ValueError("still broken")

    execution = await shadow.add(flaky, key="flaky-1")()
    async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=20)) as worker:
        await worker.run_until_finished()
    assert [a for a, _ in attempts] == [1, 2, 3]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(attempts)]
    assert all(gap >= 0.19 for gap in gaps), gaps
    state = await shadow.client.hgetall(shadow.keys.run(execution.key))
    assert state[b"state"] == b"failed"
    assert state[b"attempt"] == b"3"


async def test_a_retry_that_succeeds_stops_retrying(shadow: Shadow) -> None:
    attempts: list[int] = []

    async def flaky(retry: Retry = Retry(attempts=5)) -> None:
        attempts.append(retry.attempt)
        if retry.attempt < 2:
            raise ValueError("first time fails")

    await shadow.add(flaky)()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert attempts == [1, 2]


async def test_failing_task_is_logged_with_traceback_and_the_worker_goes_on(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    async def explode() -> None:
        raise RuntimeError("kaboom")

    async def fine(n: int) -> None:
        ran.append(n)

    await shadow.add(explode, key="exploding")()
    await shadow.add(fine)(1)
    await shadow.add(fine)(2)
    with caplog.at_level(logging.INFO, logger="shadows"):
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    assert sorted(ran) == [1, 2]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert "explode() [key=exploding attempt=1] failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert "kaboom" in caplog.text
    assert "Traceback" in caplog.text


async def test_start_and_end_lines_name_task_key_attempt_and_outcome(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    async def hello(name: str) -> None:
        pass

    await shadow.add(hello, key="hello-1")("Ada")
    with caplog.at_level(logging.INFO, logger="shadows"):
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    lines = [r.getMessage() for r in caplog.records if r.name == "shadows.worker"]
    assert "▶ hello(...) [key=hello-1 attempt=1]" in lines
    assert any(
        line.startswith("✔ hello(...) [key=hello-1 attempt=1] completed in ") for line in lines
    )


async def test_a_finished_key_can_be_scheduled_again(shadow: Shadow) -> None:
    runs: list[int] = []

    async def once(n: int) -> None:
        runs.append(n)

    await shadow.add(once, key="same")(1)
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
        await shadow.add(once, key="same")(2)
        await worker.run_until_finished()
    assert runs == [1, 2]


async def test_a_key_is_taken_while_its_task_runs(shadow: Shadow) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def slow() -> None:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

    await shadow.add(slow, key="busy")()
    async with Worker(shadow) as worker:
        running = asyncio.create_task(worker.run_until_finished())
        await asyncio.wait_for(started.wait(), 10)
        assert await shadow.task_state("busy") == "running"
        await shadow.add(slow, key="busy")()  # a no-op while it runs
        release.set()
        await asyncio.wait_for(running, 10)
    assert runs == 1
    assert await shadow.task_state("busy") == "completed"


async def test_finished_tasks_leave_only_expiring_records(shadow: Shadow) -> None:
    async def noop() -> None:
        pass

    for i in range(5):
        await shadow.add(noop, key=f"k{i}")()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    pending = await shadow.client.xpending(shadow.keys.stream, WORKER_GROUP)
    assert pending["pending"] == 0
    for i in range(5):
        ttl = await shadow.client.ttl(shadow.keys.run(f"k{i}"))
        assert 0 < ttl <= shadow.execution_ttl.total_seconds()
    keys = {k.decode() async for k in shadow.client.scan_iter(match=f"{shadow.keys.prefix}*")}
    # the shadow's token (see continuity.py) expires too, a day after the last look
    if shadow.keys.epoch in keys:
        assert await shadow.client.ttl(shadow.keys.epoch) > 0
        keys.discard(shadow.keys.epoch)
    # the layout record (the shard counts in use, docs/scaling.md) stays: one small hash
    keys.discard(shadow.keys.layout)
    assert keys == {shadow.keys.stream} | {shadow.keys.run(f"k{i}") for i in range(5)}


async def test_two_workers_run_each_of_1000_tasks_exactly_once(shadow: Shadow) -> None:
    counts: dict[int, int] = {}
    by_worker: dict[str, int] = {}

    async def count(n: int, worker_name: str = "") -> None:
        counts[n] = counts.get(n, 0) + 1
        await asyncio.sleep(0)

    for n in range(1000):
        await shadow.add(count)(n)

    async def run(name: str) -> None:
        async with Worker(shadow, name=name, concurrency=20) as worker:
            await worker.run_until_finished()
            by_worker[name] = 1

    await asyncio.gather(run("w1"), run("w2"))
    assert len(counts) == 1000
    assert set(counts.values()) == {1}


async def test_undecodable_arguments_are_logged_and_do_not_block(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    async def fine(n: int) -> None:
        ran.append(n)

    shadow.register(fine)
    # Arguments whose class lives in a module the worker does not have.
    broken = Message(
        key="broken-1",
        function="fine",
        when_ms=now_ms(),
        attempt=1,
        args=b"cno_such_module_for_shadows\nThing\n.",
        kwargs=shadow.codec.dumps({}),
    )
    await shadow.schedule_message(broken)
    await shadow.add(fine)(1)
    with caplog.at_level(logging.INFO, logger="shadows"):
        async with Worker(shadow) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 10)
    assert ran == [1]
    assert "Cannot decode the arguments of fine [key=broken-1 attempt=1]" in caplog.text
    assert "no_such_module_for_shadows" in caplog.text
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    letter = await shadow.failed_task("broken-1")
    assert letter is not None
    assert letter.reason == "undecodable"
    assert "ModuleNotFoundError" in letter.error
    assert "Traceback" in letter.traceback


async def test_garbage_on_the_stream_is_dropped_and_logged(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    async def fine(n: int) -> None:
        ran.append(n)

    await shadow.ensure_group()
    await shadow.client.xadd(shadow.keys.stream, {"garbage": b"\xff\x00"})
    await shadow.client.xadd(shadow.keys.stream, {"key": "k", "function": "fine", "when": "x"})
    await shadow.add(fine)(1)
    with caplog.at_level(logging.INFO, logger="shadows"):
        async with Worker(shadow) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 10)
    assert ran == [1]
    assert caplog.text.count("Dead-lettering malformed message") == 2
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    letters = await shadow.failed()
    assert sorted(letter.reason for letter in letters) == ["malformed", "malformed"]
    assert any("missing field 'key'" in letter.error for letter in letters)
    assert any(letter.fields.get("garbage") == b"\xff\x00" for letter in letters)


async def test_a_task_unknown_to_the_worker_is_logged(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    async def elsewhere() -> None:
        pass

    await shadow.add(elsewhere, key="lost-task")()
    del shadow.tasks["elsewhere"]
    with caplog.at_level(logging.INFO, logger="shadows"):
        async with Worker(shadow, unknown_task_grace=timedelta(0)) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 10)
    assert "Unknown task elsewhere [key=lost-task attempt=1]" in caplog.text
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    letter = await shadow.failed_task("lost-task")
    assert letter is not None
    assert letter.reason == "unknown-task"
    assert letter.function == "elsewhere"


async def test_run_at_most_caps_runs_by_key_and_by_name(shadow: Shadow) -> None:
    runs: list[str] = []

    async def again(label: str, retry: Retry = Retry(attempts=None)) -> None:
        runs.append(label)
        raise ValueError("forever")

    await shadow.add(again, key="chain")("by-key")
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_at_most({"chain": 3}), 10)
    assert runs == ["by-key"] * 3

    runs.clear()
    await shadow.add(again)("by-name")
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_at_most({"again": 2}), 10)
    assert runs == ["by-name"] * 2


async def test_stop_lets_the_running_task_finish(shadow: Shadow) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def slow(key: str) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(key)

    execution = await shadow.add(slow, key="slow-1")("slow-1")
    async with Worker(shadow) as worker:
        running = asyncio.create_task(worker.run_forever())
        await asyncio.wait_for(started.wait(), 10)
        worker.stop()
        await asyncio.wait_for(running, 10)
    assert finished == ["slow-1"]
    assert await shadow.task_state(execution.key) == "completed"
    assert await shadow.client.xlen(shadow.keys.stream) == 0


async def test_stop_before_run_forever_is_honoured(shadow: Shadow) -> None:
    """A stop that comes before the run (a signal, a shutdown hook racing the start) is
    not lost: the run returns at once and takes nothing."""
    ran: list[int] = []

    async def job(n: int) -> None:
        ran.append(n)

    await shadow.add(job, key="waiting")(1)
    async with Worker(shadow) as worker:
        worker.stop()
        await asyncio.wait_for(worker.run_forever(), 5)
        assert not worker.is_running
        assert ran == []
        assert await shadow.task_state("waiting") == "queued"
        groups = await shadow.client.xinfo_groups(shadow.keys.stream)
        assert groups == [] or all(group["pending"] == 0 for group in groups)
        assert await shadow.workers() == []  # it never announced itself

        # The stop was spent on that run: the next one runs until stopped again.
        running = asyncio.create_task(worker.run_forever())
        await wait_for(lambda: ran == [1], message="the task to run")
        worker.stop()
        await asyncio.wait_for(running, 10)
    # Leaving the block stops nothing ahead: a new block's run is a normal run.
    async with Worker(shadow) as worker:
        await shadow.add(job)(2)
        await asyncio.wait_for(worker.run_until_finished(), 10)
    assert ran == [1, 2]


async def test_cancelling_a_worker_hands_its_tasks_back_at_once(shadow: Shadow) -> None:
    started = asyncio.Event()
    runs: list[str] = []

    async def slow(label: str) -> None:
        runs.append(label)
        started.set()
        await asyncio.sleep(30)

    await shadow.add(slow, key="handed-back")("x")
    async with Worker(shadow, name="first") as worker:
        running = asyncio.create_task(worker.run_forever())
        await asyncio.wait_for(started.wait(), 10)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    # released: undelivered again, not waiting out the redelivery timeout
    pending = await shadow.client.xpending(shadow.keys.stream, WORKER_GROUP)
    assert pending["pending"] == 0
    assert await shadow.client.xlen(shadow.keys.stream) == 1
    assert await shadow.task_state("handed-back") == "queued"


async def test_a_cancel_swallowed_below_the_worker_still_stops_it(shadow: Shadow) -> None:
    """Python 3.11's ``wait_for`` (inside redis-py) can lose a cancel that lands as a
    command finishes; the worker must still stop rather than read on forever."""
    worker = Worker(shadow, minimum_check_interval=timedelta(milliseconds=50))
    original = worker._reader.next
    reached = asyncio.Event()
    swallowed = asyncio.Event()

    async def next_losing_a_cancel(*args: Any) -> Any:
        if not swallowed.is_set():
            reached.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                swallowed.set()  # lost here, as that wait_for may lose it
        return await original(*args)

    worker._reader.next = next_losing_a_cancel  # type: ignore[method-assign]
    async with worker:
        running = asyncio.create_task(worker.run_forever())
        await asyncio.wait_for(reached.wait(), 10)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)
    assert swallowed.is_set()
    assert not worker.is_running


async def test_a_long_task_keeps_its_claim_and_runs_once(shadow: Shadow) -> None:
    """A task running 3x the redelivery timeout is not taken over by an idle worker.

    A stall of this whole process longer than the fencing margin (claims unconfirmed for
    0.7 x the timeout, renewed every 0.25 x rounded up to a check: 0.4 x, 120 ms here) makes
    the worker give the task up, rightly: seen under load, a 489 ms gap in which neither
    worker ran while every renewal took 2-22 ms. Such an attempt must still not overlap its
    runs, and is made again; an attempt without such a stall must run the task once."""
    timeout = timedelta(milliseconds=300)
    stalls: list[float] = []
    runs: list[tuple[float, float]] = []

    async def long_running() -> None:
        begun = time.monotonic()
        await asyncio.sleep(0.9)
        runs.append((begun, time.monotonic()))

    for _ in range(3):
        runs.clear()
        await shadow.add(long_running)()
        async with (
            LoopStalls() as probe,
            Worker(shadow, name="busy", redelivery_timeout=timeout) as busy,
            Worker(shadow, name="idle", redelivery_timeout=timeout) as idle,
        ):
            finished = asyncio.gather(busy.run_until_finished(), idle.run_until_finished())
            await asyncio.wait_for(finished, 30)
        if len(runs) == 1:
            return
        runs.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(runs)), runs
        assert probe.longest > 0.4 * timeout.total_seconds(), (
            f"{len(runs)} runs without a stall of the process ({probe.longest:.3f} s at most)"
        )
        stalls.append(probe.longest)
    pytest.fail(f"the process stalled past the fencing margin in every attempt: {stalls}")


async def test_renewals_that_miss_redis_are_tried_again_at_the_next_check(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    """Two renewals in a row find Redis gone (refused, as while it restarts), then it is
    back. Retried at the next check (0.1 x the timeout), the claim is confirmed again
    long before the fencing limit (0.7 x); retried only at the next regular renewal
    (0.25 x, tick-rounded to 0.3 x), two misses alone left it unconfirmed for 0.9 x and
    the task was cancelled and run again (seen with Redis restarting every 1.2 s)."""
    runs: list[str] = []

    async def long_running() -> None:
        runs.append("run")
        await asyncio.sleep(2.0)

    original, calls = shadow.scripts.renew, 0

    async def renew_refused_twice(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise redis.exceptions.ConnectionError("Error 111 connecting: Connection refused")
        return await original(**kwargs)

    shadow.scripts.renew = renew_refused_twice  # type: ignore[method-assign]
    await shadow.add(long_running)()
    with caplog.at_level(logging.WARNING, logger="shadows"):
        async with Worker(shadow, redelivery_timeout=timedelta(seconds=1.5)) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 30)
    assert runs == ["run"]
    assert calls > 2
    assert caplog.text.count("Could not renew the claims of 1 task(s)") == 2
    assert "could not be renewed in time" not in caplog.text


async def test_a_task_whose_claim_is_taken_is_cancelled_and_not_acknowledged(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    """Fencing: once another consumer owns the message, this worker stops the task and
    must not acknowledge or record it."""
    started = asyncio.Event()
    finished: list[str] = []

    async def slow() -> None:
        started.set()
        await asyncio.sleep(5)
        finished.append("done")

    await shadow.add(slow, key="fenced")()
    async with Worker(shadow, name="loser", redelivery_timeout=timedelta(seconds=1)) as worker:
        running = asyncio.create_task(worker.run_forever())
        await asyncio.wait_for(started.wait(), 10)
        entries = await shadow.client.xrange(shadow.keys.stream)
        message_id = entries[0][0]
        await shadow.client.xclaim(
            shadow.keys.stream, WORKER_GROUP, "thief", 0, [message_id], justid=True
        )
        await wait_for(lambda: not worker.active_keys, timeout=5, message="the task to stop")
        worker.stop()
        await asyncio.wait_for(running, 10)
    assert finished == []
    assert "another worker has claimed its message" in caplog.text
    pending = await shadow.client.xpending_range(
        shadow.keys.stream, WORKER_GROUP, min="-", max="+", count=10
    )
    assert [p["consumer"] for p in pending] == [b"thief"]


async def test_messages_of_a_dead_worker_are_reclaimed_after_the_timeout(shadow: Shadow) -> None:
    runs: list[float] = []

    async def work() -> None:
        runs.append(time.monotonic())

    await shadow.add(work)()
    await shadow.ensure_group()
    # A worker that read the message and died: it sits in that consumer's pending list.
    await shadow.client.xreadgroup(WORKER_GROUP, "dead", {shadow.keys.stream: ">"}, count=1)
    read_at = time.monotonic()
    async with Worker(
        shadow, name="alive", redelivery_timeout=timedelta(milliseconds=400)
    ) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 10)
    assert len(runs) == 1
    assert runs[0] - read_at >= 0.4
    assert await shadow.client.xlen(shadow.keys.stream) == 0


async def test_a_restarted_worker_runs_what_it_held_under_its_name(shadow: Shadow) -> None:
    runs: list[str] = []

    async def work() -> None:
        runs.append("ran")

    await shadow.add(work)()
    await shadow.ensure_group()
    await shadow.client.xreadgroup(WORKER_GROUP, "stable", {shadow.keys.stream: ">"}, count=1)
    async with Worker(shadow, name="stable") as worker:
        await asyncio.wait_for(worker.run_until_finished(), 5)
    assert runs == ["ran"]


async def test_future_tasks_are_moved_by_one_worker_only(shadow: Shadow) -> None:
    counts: dict[int, int] = {}

    async def count(n: int) -> None:
        counts[n] = counts.get(n, 0) + 1

    when = at(0.3)
    for n in range(200):
        await shadow.add(count, when=when)(n)
    workers = [
        Worker(shadow, name=f"w{i}", scheduling_resolution=timedelta(milliseconds=10))
        for i in range(3)
    ]
    await asyncio.gather(*(w.run_until_finished() for w in workers))
    assert len(counts) == 200
    assert set(counts.values()) == {1}


def test_worker_rejects_bad_settings() -> None:
    shadow = Shadow(url="memory://settings")
    with pytest.raises(ValueError, match="concurrency"):
        Worker(shadow, concurrency=0)
    with pytest.raises(TypeError, match="redelivery_timeout"):
        Worker(shadow, redelivery_timeout=5)  # type: ignore[arg-type]


async def test_default_names_differ_within_one_process(shadow: Shadow) -> None:
    assert Worker(shadow).name != Worker(shadow).name


async def test_queue_scores_are_due_times(shadow: Shadow) -> None:
    async def noop() -> None:
        pass

    when = at(100)
    execution = await shadow.add(noop, when=when)()
    assert await shadow.client.zscore(shadow.keys.queue, execution.key) == to_ms(when)


async def test_a_retry_passed_by_the_producer_counts_attempts(shadow: Shadow) -> None:
    attempts: list[int] = []

    async def flaky(retry: Retry = Retry()) -> None:
        attempts.append(retry.attempt)
        raise ValueError("no")

    await shadow.add(flaky, key="explicit")(retry=Retry(attempts=3))
    async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=10)) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 10)
    assert attempts == [1, 2, 3]


async def test_a_short_retry_delay_is_not_rounded_up_to_the_resolution(shadow: Shadow) -> None:
    """The worker wakes its own scheduler when it parks a retry, so a 20 ms delay does
    not wait for a 30 s scheduling resolution."""
    attempts: list[int] = []

    async def flaky(retry: Retry = Retry(attempts=3, delay=timedelta(milliseconds=20))) -> None:
        attempts.append(retry.attempt)
        raise ValueError("no")

    await shadow.add(flaky)()
    async with Worker(shadow, scheduling_resolution=timedelta(seconds=30)) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 10)
    assert attempts == [1, 2, 3]


async def test_consumers_of_dead_workers_are_forgotten(
    shadow: Shadow, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shadows.worker.shard_reader

    await shadow.ensure_group()
    stream = shadow.keys.stream
    # two workers that read once and vanished, one still holding a message
    await shadow.client.xreadgroup(WORKER_GROUP, "gone-empty", {stream: ">"}, count=1)
    await shadow.add(noop_task)()
    await shadow.client.xreadgroup(WORKER_GROUP, "gone-holding", {stream: ">"}, count=1)
    monkeypatch.setattr(shadows.worker.shard_reader, "PRUNE_EVERY", 0.0)
    worker = Worker(shadow, name="pruner", redelivery_timeout=timedelta(hours=1))
    worker._reader.prune_after = 0.0
    await asyncio.wait_for(worker._reader.next(1, set(), False, asyncio.Event()), 5)
    names = {c["name"] for c in await shadow.client.xinfo_consumers(stream, WORKER_GROUP)}
    assert b"gone-empty" not in names
    assert b"gone-holding" in names  # it still holds work: redelivery will handle it


async def noop_task() -> None:
    pass


@pytest.mark.parametrize(
    "reply",
    [
        [[b"s", [[b"1-0", [b"a", b"1", b"b", b"2"]], [b"1-1", None]]]],  # RESP2
        {b"s": [[b"1-0", [b"a", b"1", b"b", b"2"]], [b"1-1", None]]},  # RESP3
    ],
)
def test_a_raw_read_reply_gives_the_entries_in_either_protocol(reply: Any) -> None:
    """The busy path reads XREADGROUP's reply straight from the connection (no response
    callback): a deleted entry's fields are None, as through redis-py's own parsing."""
    assert raw_entries(reply) == [(b"1-0", {b"a": b"1", b"b": b"2"}), (b"1-1", None)]
    assert raw_entries(None) == []
