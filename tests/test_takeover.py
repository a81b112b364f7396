"""A dead worker's messages taken over once its heartbeat lapses, fencing a worker that
comes back, and one live worker per name (real worker processes: real Redis only)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from processes import spawn_worker
from shadows import Shadow, Worker, WorkerNameTaken
from shadows.core.keys import WORKER_GROUP
from shadows.operations.registry import Presence, beat
from shadows.worker.shard_reader import ShardReader
from shadows.worker.takeover import forget_consumer
from worker_tasks import read_records, record_and_sleep


def records(path: Path, kind: str) -> list[list[str]]:
    return [r for r in read_records(path) if r[0] == kind]


async def wait_exit(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    await wait_for(lambda: process.poll() is not None, timeout, "the worker process to exit")
    return process.returncode


async def listed(shadow: Shadow, *names: str) -> bool:
    return {worker.name for worker in await shadow.workers()} >= set(names)


async def test_a_killed_workers_task_starts_again_within_its_heartbeat_window(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    """Default settings (2 s x 3 heartbeats, 5 min redelivery timeout): after SIGKILL,
    another worker starts the task within 6 + 1 s."""
    runs = tmp_path / "runs"
    names = ("left", "right")
    workers = [
        spawn_worker(redis_url, shadow_name, "--name", name, log=tmp_path / f"{name}.log")
        for name in names
    ]
    try:
        async with Shadow(name=shadow_name, url=redis_url) as shadow:
            await wait_for(lambda: listed(shadow, *names), 30, "both workers to be listed")
            await shadow.add(record_and_sleep, key="victim")(str(runs), "victim", 1.0)
            await wait_for(lambda: bool(records(runs, "start")), 30, "the task to start")
            first = int(records(runs, "start")[0][2])
            victim = next(p for p in workers if p.pid == first)
            victim.send_signal(signal.SIGKILL)
            killed = time.time()
            victim.wait(10)
            await wait_for(lambda: len(records(runs, "start")) == 2, 20, "the task to restart")
            again = records(runs, "start")[1]
            recovery = float(again[3]) - killed
            assert int(again[2]) != first
            assert recovery <= 2.0 * 3 + 1.0, f"restarted {recovery:.2f} s after the kill"
            await wait_for(lambda: bool(records(runs, "end")), 10, "the task to end")
            await wait_for(
                lambda: _state_is(shadow, "victim", "completed"), 10, "the task's record"
            )
            log = (tmp_path / f"{names[1 - workers.index(victim)]}.log").read_text()
            assert "Took over 1 message(s) of workers whose heartbeat lapsed" in log
    finally:
        for process in workers:
            process.kill()
            process.wait(10)


async def _state_is(shadow: Shadow, key: str, state: str) -> bool:
    return await shadow.task_state(key) == state


async def test_a_worker_back_from_sigstop_does_not_run_on_a_task_taken_from_it(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    beats = ("--heartbeat-interval", "500ms")  # a 1.5 s window
    stopped = spawn_worker(
        redis_url, shadow_name, *beats, "--name", "stopped", log=tmp_path / "stopped.log"
    )
    other: subprocess.Popen[bytes] | None = None
    try:
        async with Shadow(name=shadow_name, url=redis_url) as shadow:
            await wait_for(lambda: listed(shadow, "stopped"), 30, "the worker to be listed")
            await shadow.add(record_and_sleep, key="paused")(str(runs), "paused", 2.0)
            await wait_for(lambda: bool(records(runs, "start")), 30, "the task to start")
            stopped.send_signal(signal.SIGSTOP)
            other = spawn_worker(
                redis_url, shadow_name, *beats, "--name", "other", log=tmp_path / "other.log"
            )
            await wait_for(lambda: len(records(runs, "start")) == 2, 30, "the takeover")
            # The stopped worker's sleep is long over: without fencing, it would write its
            # "end" line the moment it runs again.
            stopped.send_signal(signal.SIGCONT)
            await wait_for(lambda: bool(records(runs, "end")), 10, "the task to end")
            await wait_for(
                lambda: (
                    "Cancelling task record_and_sleep:paused"
                    in (tmp_path / "stopped.log").read_text()
                ),
                10,
                "the stopped worker to cancel its run",
            )
            await wait_for(lambda: _state_is(shadow, "paused", "completed"), 10, "completion")
            # and it goes on working: the next task runs on one of the two
            await shadow.add(record_and_sleep, key="after")(str(runs), "after", 0.0)
            await wait_for(lambda: _state_is(shadow, "after", "completed"), 20, "a later task")
    finally:
        for process in (stopped, other):
            if process is not None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(10)
    ends = records(runs, "end")
    starts = records(runs, "start")
    paused_ends = [r for r in ends if r[1] == "paused"]
    assert [r[2] for r in paused_ends] == [str(other.pid)]
    assert [r[2] for r in starts if r[1] == "paused"] == [str(stopped.pid), str(other.pid)]


async def test_a_second_live_worker_under_one_name_refuses_to_start(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    # 1 s heartbeats: the restart below waits 3 s, not 6 s, for the dead one's entry to lapse
    beats = ("--heartbeat-interval", "1s")
    first = spawn_worker(
        redis_url, shadow_name, "--name", "twin", *beats, log=tmp_path / "first.log"
    )
    processes = [first]
    try:
        async with Shadow(name=shadow_name, url=redis_url) as shadow:
            await wait_for(lambda: listed(shadow, "twin"), 30, "the first worker to be listed")
            second_log = tmp_path / "second.log"
            second = spawn_worker(redis_url, shadow_name, "--name", "twin", *beats, log=second_log)
            processes.append(second)
            assert await wait_exit(second) == 3
            assert (
                f"Error: another worker named 'twin' is running on shadow '{shadow_name}'"
                in second_log.read_text()
            )
            # the first one is still listed, and still works
            assert await listed(shadow, "twin")
            await shadow.add(record_and_sleep, key="still")(str(runs), "still", 0.0)
            await wait_for(lambda: _state_is(shadow, "still", "completed"), 20, "the first")
            assert [r[2] for r in records(runs, "start")] == [str(first.pid)]

            # Once the first is dead, a worker restarting under the name starts normally
            # (after its old entry lapses) and runs what the dead one held.
            await shadow.add(record_and_sleep, key="held")(str(runs), "held", 30.0)
            await wait_for(lambda: len(records(runs, "start")) == 2, 20, "the long task")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            third = spawn_worker(
                redis_url, shadow_name, "--name", "twin", *beats, log=tmp_path / "third.log"
            )
            processes.append(third)
            await wait_for(lambda: len(records(runs, "start")) == 3, 30, "the restart")
            assert records(runs, "start")[2][1:3] == ["held", str(third.pid)]
            assert third.poll() is None
    finally:
        for process in processes:
            process.kill()
            process.wait(10)


async def test_two_workers_in_one_process_under_one_name(url: str, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=url, heartbeat_interval=_ms(50)) as shadow:
        async with Worker(shadow, name="same") as first, Worker(shadow, name="same") as second:
            running = asyncio.create_task(first.run_forever())
            await wait_for(lambda: listed(shadow, "same"), 10, "the first to be listed")
            try:
                started = time.monotonic()
                with pytest.raises(WorkerNameTaken, match="another worker named 'same' is"):
                    await second.run_forever()
                assert time.monotonic() - started < 5
                assert not running.done()
                assert await listed(shadow, "same")
            finally:
                first.stop()
                await running
        assert not await listed(shadow, "same")


def _ms(milliseconds: int) -> Any:
    from datetime import timedelta

    return timedelta(milliseconds=milliseconds)


async def test_a_consumer_is_forgotten_only_while_it_holds_nothing(shadow: Shadow) -> None:
    await shadow.ensure_group()
    stream = shadow.keys.stream
    await shadow.client.xadd(stream, {"key": "x"})
    await shadow.client.xreadgroup(WORKER_GROUP, "holder", {stream: ">"}, count=1)
    assert not await forget_consumer(shadow, "holder")
    summary = await shadow.client.xpending(stream, WORKER_GROUP)
    assert summary["pending"] == 1
    await shadow.client.xgroup_createconsumer(stream, WORKER_GROUP, "empty")
    assert await forget_consumer(shadow, "empty")
    names = [c["name"] for c in await shadow.client.xinfo_consumers(stream, WORKER_GROUP)]
    assert [n.decode() if isinstance(n, bytes) else n for n in names] == ["holder"]


async def test_pruning_keeps_a_consumer_that_received_a_message_meanwhile(
    shadow: Shadow,
) -> None:
    """Between XINFO CONSUMERS (nothing pending, idle) and the deletion, the consumer
    receives a message: it must not be deleted with it."""
    await shadow.ensure_group()
    client = shadow.client
    stream = shadow.keys.stream
    await client.xgroup_createconsumer(stream, WORKER_GROUP, "late")
    reader = ShardReader(shadow, "pruner", _ms(100), block=0.01, claim_every=1.0)
    reader.prune_after = 0.0
    original = client.xinfo_consumers

    async def then_deliver(*args: Any, **kwargs: Any) -> Any:
        info = await original(*args, **kwargs)
        await client.xadd(stream, {"key": "y"})
        await client.xreadgroup(WORKER_GROUP, "late", {stream: ">"}, count=1)
        return info

    client.xinfo_consumers = then_deliver  # type: ignore[method-assign]
    await asyncio.sleep(0.01)  # idle > 0 ms
    try:
        await reader._prune_consumers()
    finally:
        del client.xinfo_consumers
    pending = await client.xpending_range(stream, WORKER_GROUP, "-", "+", 10)
    assert [_text(p["consumer"]) for p in pending] == ["late"]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_a_lapsed_workers_messages_wait_for_a_worker_listed_a_whole_window(
    shadow: Shadow,
) -> None:
    """After a Redis pause longer than the window every entry has lapsed at once: a
    worker only takes over once its own entry has lasted a window."""
    await shadow.ensure_group()
    stream = shadow.keys.stream
    await shadow.client.xadd(stream, {"key": "z"})
    await shadow.client.xreadgroup(WORKER_GROUP, "gone", {stream: ">"}, count=1)
    from shadows.worker.takeover import Takeover

    token = "t" * 32
    presence = Presence("taker", 1, 0, 0, [], token=token)
    takeover = Takeover(shadow, "taker", lambda: token, 30_000, beats_per_window=3)
    for _ in range(2):
        await beat(shadow, presence, 30_000, 0)
        assert await takeover.claim(5) == []  # listed for less than a window
    await beat(shadow, presence, 30_000, 0)
    [((_, fields), deliveries)] = await takeover.claim(5)
    assert (fields, deliveries) == ({b"key": b"z"}, 2)
    pending = await shadow.client.xpending_range(stream, WORKER_GROUP, "-", "+", 10)
    assert [_text(p["consumer"]) for p in pending] == ["taker"]
