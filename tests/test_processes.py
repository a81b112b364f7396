"""Worker processes killed, stopped and cut off from Redis (real Redis only: memory:// lives
inside one process by design)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import wait_for
from processes import spawn_worker
from redis_server import RedisProcess
from shadows import Shadow, Worker
from shadows.core.keys import WORKER_GROUP
from worker_tasks import read_records, record_and_sleep


def starts(path: Path) -> list[list[str]]:
    return [r for r in read_records(path) if r[0] == "start"]


def ends(path: Path) -> list[list[str]]:
    return [r for r in read_records(path) if r[0] == "end"]


async def wait_exit(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    await wait_for(lambda: process.poll() is not None, timeout, "the worker process to exit")
    return process.returncode


async def test_a_killed_workers_task_is_finished_by_another_after_the_timeout(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await shadow.add(record_and_sleep, key="victim")(str(runs), "victim", 1.5)
        first = spawn_worker(
            redis_url, shadow_name, "--redelivery-timeout", "1s", log=tmp_path / "first.log"
        )
        try:
            await wait_for(lambda: bool(starts(runs)), 30, "the first worker to start the task")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            second = spawn_worker(
                redis_url,
                shadow_name,
                "--redelivery-timeout", "1s",
                "--until-finished",
                log=tmp_path / "second.log",
            )  # fmt: skip
            assert await wait_exit(second) == 0, (tmp_path / "second.log").read_text()
        finally:
            first.kill()
        assert await shadow.task_state("victim") == "completed"
        assert await shadow.client.xlen(shadow.keys.stream) == 0

    begun, finished = starts(runs), ends(runs)
    assert [r[2] for r in begun] == [str(first.pid), str(second.pid)]
    assert [r[2] for r in finished] == [str(second.pid)]
    # Reclaimed once idle for the timeout, counted from the delivery, which comes a little
    # before the first body records its start (seen: 0.9995 s between the two starts)
    assert float(begun[1][3]) - float(begun[0][3]) >= 1.0 - 0.1


async def test_a_task_longer_than_the_timeout_runs_once_while_another_worker_waits(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await shadow.add(record_and_sleep, key="long")(str(runs), "long", 3.0)
        workers = [
            spawn_worker(
                redis_url,
                shadow_name,
                "--redelivery-timeout",
                "1s",
                "--until-finished",
                log=tmp_path / f"worker{i}.log",
            )
            for i in range(2)
        ]
        try:
            for process in workers:
                assert await wait_exit(process) == 0
        finally:
            for process in workers:
                process.kill()
    assert len(starts(runs)) == 1
    assert len(ends(runs)) == 1


async def test_sigterm_lets_the_running_task_finish_then_exits_0(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    log = tmp_path / "worker.log"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await shadow.add(record_and_sleep, key="graceful")(str(runs), "graceful", 1.0)
        process = spawn_worker(redis_url, shadow_name, log=log)
        try:
            await wait_for(lambda: bool(starts(runs)), 30, "the task to start")
            process.send_signal(signal.SIGTERM)
            assert await wait_exit(process) == 0
        finally:
            process.kill()
        assert len(ends(runs)) == 1
        assert await shadow.task_state("graceful") == "completed"
        assert await shadow.client.xlen(shadow.keys.stream) == 0
        pending = await shadow.client.xpending(shadow.keys.stream, WORKER_GROUP)
        assert pending["pending"] == 0
    text = log.read_text()
    assert "SIGTERM received: finishing running tasks, then exiting" in text
    assert "Worker" in text and "stopped" in text


async def test_a_second_sigint_cancels_and_hands_the_task_back(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await shadow.add(record_and_sleep, key="impatient")(str(runs), "impatient", 60)
        process = spawn_worker(redis_url, shadow_name, log=tmp_path / "worker.log")
        try:
            await wait_for(lambda: bool(starts(runs)), 30, "the task to start")
            process.send_signal(signal.SIGINT)
            log = tmp_path / "worker.log"
            await wait_for(
                lambda: "SIGINT received: finishing" in log.read_text(), 10, "the first SIGINT"
            )
            process.send_signal(signal.SIGINT)
            assert await wait_exit(process) == 0
        finally:
            process.kill()
        assert ends(runs) == []
        # handed back to the stream for the next worker, not stuck until a timeout
        assert await shadow.task_state("impatient") == "queued"
        pending = await shadow.client.xpending(shadow.keys.stream, WORKER_GROUP)
        assert pending["pending"] == 0


async def test_a_worker_survives_a_redis_restart_and_loses_nothing(tmp_path: Path) -> None:
    ran: Counter[str] = Counter()

    async def note(label: str) -> None:
        ran[label] += 1

    with RedisProcess(persistent=True) as server:
        async with Shadow(name="restarts", url=server.url) as shadow:
            worker = Worker(
                shadow,
                reconnection_delay=timedelta(milliseconds=200),
                scheduling_resolution=timedelta(milliseconds=50),
            )
            running = asyncio.create_task(worker.run_forever())
            try:
                for i in range(5):
                    await shadow.add(note)(f"before-{i}")
                await wait_for(lambda: len(ran) == 5, 10, "the first tasks")
                due = datetime.now(UTC) + timedelta(seconds=1.5)
                for i in range(5):
                    await shadow.add(note, when=due)(f"future-{i}")

                server.restart()

                for i in range(5):
                    await shadow.add(note)(f"after-{i}")
                await wait_for(lambda: len(ran) == 15, 20, "all tasks after the restart")

                server.restart(kill=True)
                await shadow.add(note)("after-kill")
                await wait_for(lambda: len(ran) == 16, 20, "a task after a hard kill")
            finally:
                worker.stop()
                await asyncio.wait_for(running, 10)
    assert set(ran.values()) == {1}


async def test_an_idle_worker_stops_at_once_after_a_redis_restart() -> None:
    """The blocking read is woken with CLIENT UNBLOCK; after a reconnection the worker
    must use its new client id, or ``stop()`` would wait out a whole block."""
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    with RedisProcess(persistent=False) as server:
        async with Shadow(name="unblock-restart", url=server.url) as shadow:
            worker = Worker(
                shadow,
                reconnection_delay=timedelta(milliseconds=100),
                minimum_check_interval=timedelta(seconds=60),  # one block: a minute
            )
            running = asyncio.create_task(worker.run_forever())
            await shadow.add(note)("before")
            await wait_for(lambda: ran == ["before"], 10, "a task before the restart")
            server.restart()
            await shadow.ensure_group()
            await shadow.add(note)("after")
            await wait_for(lambda: ran == ["before", "after"], 20, "a task after the restart")
            worker.stop()
            await asyncio.wait_for(running, 10)


async def test_a_worker_started_before_redis_waits_for_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    server = RedisProcess(persistent=False)
    try:
        async with Shadow(name="late-redis", url=server.url) as shadow:
            shadow.register(note)
            worker = Worker(shadow, reconnection_delay=timedelta(milliseconds=200))
            with caplog.at_level(logging.WARNING, logger="shadows"):
                running = asyncio.create_task(worker.run_forever())
                await wait_for(lambda: "Redis unavailable" in caplog.text, 10, "a retry")
            assert not running.done()
            server.start()
            await shadow.add(note)("hello")
            await wait_for(lambda: ran == ["hello"], 20, "the task once Redis is up")
            worker.stop()
            await asyncio.wait_for(running, 10)
    finally:
        server.stop()
