"""``shadows watch`` and ``shadows cancel``: as a subprocess against a real Redis, and
in-process (:func:`test_cli.shadows_cli_in_process`) on real Redis and on memory://."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import wait_for
from shadows import ExecutionState, Progress, Shadow, Worker
from test_cli import TESTS, assert_one_line_error, shadows_cli_in_process


async def cli(*args: str) -> asyncio.subprocess.Process:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SHADOW_")}
    environment["PYTHONPATH"] = str(TESTS)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shadows",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        cwd=TESTS,
    )


async def test_watch_json_streams_state_and_progress_to_the_end(redis_url: str) -> None:
    name = f"watch-{uuid.uuid4().hex[:8]}"
    go = asyncio.Event()

    async def steps(progress: Progress = Progress()) -> int:
        await progress.set_total(3)
        for step in range(3):
            await go.wait()
            await progress.set_message(f"step {step}")
            await progress.increment()
            await asyncio.sleep(0.05)
        return 3

    async with Shadow(name=name, url=redis_url) as shadow:
        shadow.register(steps)
        await shadow.add(steps, key="job")()
        watcher = await cli("watch", "job", "--json", "--shadows", name, "--url", redis_url)
        assert watcher.stdout is not None
        first = json.loads(await asyncio.wait_for(watcher.stdout.readline(), 30))
        assert first == {
            "event": "state",
            "key": "job",
            "state": "queued",
            "progress": {"current": 0, "total": None, "message": None},
        }
        async with Worker(shadow) as worker:
            running = asyncio.create_task(worker.run_until_finished())
            go.set()
            out, _ = await asyncio.wait_for(watcher.communicate(), 30)
            await running
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert watcher.returncode == 0
    assert events[-1]["state"] == "completed"
    assert events[-1]["progress"] == {"current": 3, "total": 3, "message": "step 2"}
    assert any(event["event"] == "progress" for event in events)


# -- in-process, on real Redis and on memory:// ------------------------------------------


async def watch_in_process(shadow: Shadow, url: str, key: str, *options: str) -> asyncio.Task[Any]:
    """``shadows watch KEY`` in this process, started once its first read has marked the
    run record watched (so the events before that are not missed)."""
    command = ("watch", key, *options, "--shadows", shadow.name, "--url", url)
    watching = asyncio.create_task(asyncio.to_thread(shadows_cli_in_process, *command))

    async def marked() -> bool:
        return bool(await shadow.client.hexists(shadow.keys.run(key), "watched"))

    await wait_for(marked, 30, "the watcher's first read")
    return watching


async def test_watch_json_follows_a_task_to_its_end_on_both_backends(
    shadow: Shadow, url: str
) -> None:
    async def steps(progress: Progress = Progress()) -> str:
        await progress.set_total(2)
        for step in range(2):
            await progress.set_message(f"step {step}")
            await progress.increment()
        return "done"

    shadow.register(steps)
    await shadow.add(steps, key="job")()
    watching = await watch_in_process(shadow, url, "job", "--json")
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    result = await asyncio.wait_for(watching, 30)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["state"] == "queued"
    assert events[-1] == {
        "event": "state",
        "key": "job",
        "state": "completed",
        "progress": {"current": 2, "total": 2, "message": "step 1"},
    }


async def test_watch_shows_a_bar_and_the_outcome_on_both_backends(shadow: Shadow, url: str) -> None:
    async def imports(progress: Progress = Progress()) -> None:
        await progress.set_total(4)
        await progress.set_message("importing")
        await progress.increment(by=4)

    async def broken() -> None:
        raise ValueError("no luck")

    shadow.register(imports)
    shadow.register(broken)
    await shadow.add(imports, key="job")()
    await shadow.add(broken, key="bad")()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()

    def watch(key: str) -> subprocess.CompletedProcess[str]:
        return shadows_cli_in_process("watch", key, "--shadows", shadow.name, "--url", url)

    done = await asyncio.to_thread(watch, "job")
    assert done.returncode == 0, done.stderr
    assert "100% completed · importing" in done.stdout
    assert done.stdout.splitlines()[-1] == "job: completed"
    failed = await asyncio.to_thread(watch, "bad")
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout.splitlines()[-1] == "bad: failed (ValueError: no luck)"

    unknown = await asyncio.to_thread(watch, "nope")
    assert_one_line_error(unknown, "No task 'nope'")


async def test_watching_a_task_cancelled_while_it_runs_ends_with_status_1(
    shadow: Shadow, url: str
) -> None:
    started = asyncio.Event()

    async def long(progress: Progress = Progress()) -> None:
        await progress.set_message("working")
        started.set()
        await asyncio.sleep(3600)

    shadow.register(long)
    await shadow.add(long, key="long")()
    watching = await watch_in_process(shadow, url, "long", "--json")
    async with Worker(shadow) as worker:
        running = asyncio.create_task(worker.run_until_finished())
        await asyncio.wait_for(started.wait(), 10)
        assert await shadow.cancel("long")
        await asyncio.wait_for(running, 10)
    result = await asyncio.wait_for(watching, 30)
    assert result.returncode == 1, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["state"] == "cancelled"
    assert events[-1]["progress"]["message"] == "working"


async def test_cancel_command_stops_a_running_task_on_both_backends(
    shadow: Shadow, url: str
) -> None:
    started = asyncio.Event()
    ended: list[str] = []

    async def long() -> None:
        started.set()
        await asyncio.sleep(3600)
        ended.append("no")

    shadow.register(long)
    await shadow.add(long, key="long")()
    command = ("cancel", "long", "--shadows", shadow.name, "--url", url)
    async with Worker(shadow) as worker:
        running = asyncio.create_task(worker.run_until_finished())
        await asyncio.wait_for(started.wait(), 10)
        result = await asyncio.to_thread(shadows_cli_in_process, *command)
        assert result.returncode == 0, result.stderr
        assert "Cancelling long" in result.stdout
        await asyncio.wait_for(running, 10)
    assert ended == []
    found = await shadow.get_execution("long")
    assert found is not None and found.state is ExecutionState.CANCELLED
    again = await asyncio.to_thread(shadows_cli_in_process, *command)
    assert_one_line_error(again, "Nothing to cancel")

    await shadow.add(long, key="later", when=datetime.now(UTC) + timedelta(hours=1))()
    queued = await asyncio.to_thread(
        shadows_cli_in_process, "cancel", "later", "--shadows", shadow.name, "--url", url
    )
    assert (queued.returncode, queued.stdout.strip()) == (0, "Cancelled later."), queued.stderr
    found = await shadow.get_execution("later")
    assert found is not None and found.state is ExecutionState.CANCELLED
