"""Messages for tasks a worker does not register: handed back for the workers that do
(a rolling deploy), dead-lettered only after the grace period with none alive."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import wait_for
from processes import spawn_worker
from shadows import Shadow, Worker
from worker_tasks import read_records, rolled_out


async def test_an_old_worker_hands_new_tasks_back_to_a_worker_that_knows_them(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    """The old worker refuses every message while the new one is stopped (but alive in
    the registry), with no grace at all: nothing is dead-lettered, and the new worker
    runs each message once when it resumes."""
    runs = tmp_path / "runs"
    new_log, old_log = tmp_path / "new.log", tmp_path / "old.log"
    new = spawn_worker(
        redis_url,
        shadow_name,
        "--heartbeat-interval",
        "5s",
        log=new_log,
        tasks="worker_tasks:newer",
    )
    old = None
    try:
        async with Shadow(name=shadow_name, url=redis_url) as shadow:

            async def registered() -> bool:
                return bool(await shadow.task_workers("rolled_out"))

            await wait_for(registered, 30, "the new worker in the registry")
            new.send_signal(signal.SIGSTOP)
            old = spawn_worker(redis_url, shadow_name, "--unknown-task-grace", "0s", log=old_log)
            shadow.register(rolled_out)
            for number in range(5):
                await shadow.add(rolled_out, key=f"new-{number}")(str(runs), f"new-{number}")
            await wait_for(
                lambda: "handing its messages back" in old_log.read_text(),
                30,
                "the old worker to hand a message back",
            )
            assert read_records(runs) == []
            new.send_signal(signal.SIGCONT)
            await wait_for(lambda: len(read_records(runs)) == 5, 30, "every message to run")

            async def completed() -> bool:
                states = {await shadow.task_state(f"new-{n}") for n in range(5)}
                return states == {"completed"}

            await wait_for(completed, 30, "every message to be recorded as completed")
            assert await shadow.failed() == []
        labels = sorted(record[1] for record in read_records(runs))
        assert labels == [f"new-{n}" for n in range(5)]
        assert {record[2] for record in read_records(runs)} == {str(new.pid)}
        assert "Unknown task" not in old_log.read_text()
    finally:
        new.send_signal(signal.SIGCONT)
        for process in (new, old):
            if process is not None:
                process.kill()
                process.wait(10)


async def test_a_task_no_live_worker_knows_is_dead_lettered_after_the_grace(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    async def elsewhere() -> None:
        pass

    await shadow.add(elsewhere, key="orphan")()
    del shadow.tasks["elsewhere"]
    grace = timedelta(seconds=1)
    with caplog.at_level(logging.INFO, logger="shadows"):
        async with Worker(shadow, unknown_task_grace=grace) as worker:
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(worker.run_until_finished(), 20)
            waited = asyncio.get_running_loop().time() - started
    assert waited >= grace.total_seconds()
    assert caplog.text.count("handing its messages back") == 1
    assert caplog.text.count("Unknown task elsewhere [key=orphan") == 1
    assert worker.metrics.series["elsewhere"].handed_back >= 1
    assert worker.metrics.series["elsewhere"].failed == 1
    letter = await shadow.failed_task("orphan")
    assert letter is not None and letter.reason == "unknown-task"
    assert "within 1 s" in letter.error
