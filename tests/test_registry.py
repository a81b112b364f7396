"""The registry of live workers: heartbeats, workers(), task_workers(), dead workers
dropping out, and nothing left behind."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import shadows.worker.heartbeat
from conftest import wait_for
from processes import spawn_worker
from redis_server import RedisProcess
from shadows import Shadow, Worker
from shadows.core.execution import now_ms
from shadows.operations.registry import Presence, beat


async def send_email(address: str) -> None:
    await asyncio.sleep(0)


async def names(shadow: Shadow) -> list[str]:
    return [worker.name for worker in await shadow.workers()]


async def test_a_running_worker_is_listed_with_its_tasks(shadow: Shadow) -> None:
    shadow.register(send_email)
    async with Worker(shadow, name="mail-1", concurrency=7) as worker:
        running = asyncio.create_task(worker.run_forever())
        try:
            await wait_for(lambda: names(shadow), message="the worker to be listed")
            [info] = await shadow.workers()
            assert info.name == "mail-1"
            assert info.concurrency == 7
            assert info.tasks == {"send_email", "trace", "fail", "sleep"}
            assert info.started is not None and info.started <= info.last_seen
            assert [w.name for w in await shadow.task_workers("send_email")] == ["mail-1"]
            assert [w.name for w in await shadow.task_workers(send_email)] == ["mail-1"]
            assert await shadow.task_workers("unknown_task") == []
        finally:
            worker.stop()
            await running


async def test_task_workers_tells_workers_apart_by_their_tasks(url: str, shadow_name: str) -> None:
    async with (
        Shadow(name=shadow_name, url=url) as mail,
        Shadow(name=shadow_name, url=url) as plain,
    ):
        mail.register(send_email)
        async with Worker(mail, name="mail") as first, Worker(plain, name="plain") as second:
            runs = [asyncio.create_task(w.run_forever()) for w in (first, second)]
            try:

                async def both() -> bool:
                    return await names(plain) == ["mail", "plain"]

                await wait_for(both, message="both workers to be listed")
                assert [w.name for w in await plain.task_workers("send_email")] == ["mail"]
                assert [w.name for w in await plain.task_workers("trace")] == ["mail", "plain"]
            finally:
                first.stop()
                second.stop()
                await asyncio.gather(*runs)
        await _delete_all(plain)


async def _delete_all(shadow: Shadow) -> None:
    keys = [key async for key in shadow.client.scan_iter(match=f"{shadow.keys.prefix}*")]
    if keys:
        await shadow.client.delete(*keys)


async def test_the_running_count_follows_the_worker(shadow: Shadow) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    shadow.register(hold)
    await shadow.add(hold)()
    async with Worker(shadow, heartbeat_interval=timedelta(milliseconds=20)) as worker:
        running = asyncio.create_task(worker.run_until_finished())
        await wait_for(started.is_set, message="the task to start")

        async def busy() -> bool:
            return [w.running for w in await shadow.workers()] == [1]

        await wait_for(busy, message="a heartbeat counting the running task")
        release.set()
        await running


async def test_a_worker_that_stops_cleanly_leaves_at_once(shadow: Shadow) -> None:
    keys = shadow.keys
    async with Worker(shadow, name="leaver") as worker:
        running = asyncio.create_task(worker.run_forever())
        await wait_for(lambda: names(shadow), message="the worker to be listed")
        worker.stop()
        await running
    assert await shadow.workers() == []
    client = shadow.client
    assert await client.exists(keys.worker("leaver"), keys.worker_tasks("leaver")) == 0
    assert await client.zscore(keys.workers, "leaver") is None


async def test_a_dead_worker_drops_out_after_the_missed_heartbeat_window(
    shadow: Shadow,
) -> None:
    # One heartbeat and then silence: what a crashed worker leaves behind.
    presence = Presence("ghost", 4, 0, now_ms(), ["trace"])
    written = time.monotonic()
    await beat(shadow, presence, window_ms=600, now=now_ms())
    assert await names(shadow) == ["ghost"]
    assert [w.name for w in await shadow.task_workers("trace")] == ["ghost"]

    async def gone() -> bool:
        return await names(shadow) == []

    await wait_for(gone, message="the dead worker to drop out")
    assert time.monotonic() - written >= 0.5  # not before its window ran out
    assert await shadow.task_workers("trace") == []


async def test_a_shadow_sets_how_often_its_workers_beat_and_how_many_beats_they_may_miss(
    shadow: Shadow, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, client = shadow.keys, shadow.client
    async with Shadow(
        name=shadow.name,
        url=shadow.url,
        heartbeat_interval=timedelta(milliseconds=100),
        missed_heartbeats=2,
    ) as tuned:
        quick = Worker(tuned, name="quick")
        slow = Worker(tuned, name="slow", heartbeat_interval=timedelta(seconds=1))
        assert quick.heartbeat_interval == timedelta(milliseconds=100)
        assert slow.heartbeat_interval == timedelta(seconds=1)
        async with quick, slow:
            runs = [asyncio.create_task(w.run_forever()) for w in (quick, slow)]
            try:

                async def both() -> bool:
                    return await names(shadow) == ["quick", "slow"]

                await wait_for(both, message="both workers to be listed")
                # Each entry lasts two intervals of its own worker.
                assert 0 < await client.pttl(keys.worker("quick")) <= 200
                assert 200 < await client.pttl(keys.worker("slow")) <= 2000

                # A worker that dies (here: stops without leaving) drops out of every
                # listing, whatever the lister's own settings, once two beats are missed.
                async def stay(*_: Any) -> None:
                    pass

                monkeypatch.setattr(shadows.worker.heartbeat, "leave", stay)
                quick.stop()
                await runs[0]

                async def only_slow() -> bool:
                    return await names(shadow) == ["slow"]

                await wait_for(only_slow, message="the silent worker to drop out")
                assert [w.name for w in await tuned.task_workers("trace")] == ["slow"]
            finally:
                monkeypatch.undo()
                for worker in (quick, slow):
                    worker.stop()
                await asyncio.gather(*runs)
        assert await names(tuned) == []


def test_a_shadow_has_the_default_heartbeat_settings() -> None:
    shadow = Shadow(url="memory://")
    assert (shadow.heartbeat_interval, shadow.missed_heartbeats) == (timedelta(seconds=2), 3)
    assert Worker(shadow).heartbeat_interval == timedelta(seconds=2)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"heartbeat_interval": 2}, TypeError, "heartbeat_interval must be a timedelta, not int"),
        ({"heartbeat_interval": timedelta(0)}, ValueError, "positive timedelta of at least 10 ms"),
        ({"heartbeat_interval": timedelta(seconds=-1)}, ValueError, "not -1.0 s"),
        ({"heartbeat_interval": timedelta(milliseconds=5)}, ValueError, "at least 10 ms"),
        ({"missed_heartbeats": 0}, ValueError, "missed_heartbeats must be a positive integer"),
        ({"missed_heartbeats": -2}, ValueError, "positive integer, not -2"),
        ({"missed_heartbeats": 2.5}, TypeError, "missed_heartbeats must be an int, not float"),
        ({"missed_heartbeats": True}, TypeError, "missed_heartbeats must be an int, not bool"),
    ],
)
def test_heartbeat_settings_that_cannot_work_are_clear_errors(
    settings: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Shadow(url="memory://", **settings)


async def test_heartbeats_prune_the_names_of_dead_workers(shadow: Shadow) -> None:
    keys = shadow.keys
    client = shadow.client
    await beat(shadow, Presence("alive", 1, 0, now_ms(), ["trace"]), 10_000, now_ms())
    await beat(shadow, Presence("ghost", 1, 0, now_ms(), ["trace"]), 100, now_ms())

    async def expired() -> bool:
        return await client.exists(keys.worker("ghost")) == 0

    await wait_for(expired, message="the ghost's keys to expire")
    assert await client.zscore(keys.workers, "ghost") is not None  # only its name is left
    # A heartbeat prunes the names older than its own window whose keys have expired
    # (this one's clock is one window on, so the ghost's name qualifies).
    await beat(shadow, Presence("alive", 1, 0, now_ms(), ["trace"]), 100, now_ms() + 200)
    assert await client.zscore(keys.workers, "ghost") is None
    assert await client.exists(keys.worker_tasks("ghost")) == 0
    assert await names(shadow) == ["alive"]


async def test_the_registry_expires_once_every_worker_is_gone(shadow: Shadow) -> None:
    await beat(shadow, Presence("only", 1, 0, now_ms(), ["trace"]), 100, now_ms())
    assert 0 < await shadow.client.pttl(shadow.keys.workers) <= 100

    async def gone() -> bool:
        return await shadow.client.exists(shadow.keys.workers) == 0

    await wait_for(gone, message="the registry to expire")


async def test_a_killed_worker_process_drops_out(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        process = spawn_worker(
            redis_url,
            shadow_name,
            "--name", "doomed",
            "--heartbeat-interval", "1s",
            log=tmp_path / "worker.log",
        )  # fmt: skip
        try:
            await wait_for(lambda: names(shadow), 30, "the worker process to be listed")
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            killed = time.monotonic()

            async def gone() -> bool:
                return await names(shadow) == []

            await wait_for(gone, 15, "the killed worker to drop out")
            # Its last heartbeat was at most 1 s before the kill, and lasts 3 s.
            assert time.monotonic() - killed >= 1.9
        finally:
            process.kill()
            await _delete_all(shadow)


async def test_the_heartbeat_comes_back_after_a_redis_restart(shadow_name: str) -> None:
    with RedisProcess() as server:
        async with Shadow(name=shadow_name, url=server.url) as shadow:
            worker = Worker(
                shadow,
                name="survivor",
                heartbeat_interval=timedelta(milliseconds=100),
                reconnection_delay=timedelta(milliseconds=200),
            )
            async with worker:
                running = asyncio.create_task(worker.run_forever())
                try:
                    await wait_for(lambda: names(shadow), message="the worker to be listed")
                    server.restart()  # not persistent: the registry is gone with the data
                    await wait_for(lambda: names(shadow), 30, "the worker to be listed again")
                finally:
                    worker.stop()
                    await running
