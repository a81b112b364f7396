"""``shadows watch`` and ``shadows cancel`` against a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from conftest import wait_for
from shadows import ExecutionState, Progress, Shadow, Worker
from test_cli import TESTS, assert_one_line_error, shadows_cli


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


async def test_watch_shows_a_bar_and_exits_1_for_a_failed_task(redis_url: str) -> None:
    name = f"watch-{uuid.uuid4().hex[:8]}"

    async def broken() -> None:
        raise ValueError("no luck")

    async with Shadow(name=name, url=redis_url) as shadow:
        shadow.register(broken)
        await shadow.add(broken, key="bad")()
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    result = await asyncio.to_thread(
        shadows_cli, "watch", "bad", "--shadows", name, "--url", redis_url
    )
    assert result.returncode == 1, result.stderr
    assert "bad: failed (ValueError: no luck)" in result.stdout


def test_watch_an_unknown_key_is_a_one_line_error(redis_url: str) -> None:
    result = shadows_cli("watch", "nope", "--shadows", "nothing-here", "--url", redis_url)
    assert_one_line_error(result, "No task 'nope'")


async def test_cancel_stops_a_running_task(redis_url: str) -> None:
    name = f"cancel-{uuid.uuid4().hex[:8]}"
    started = asyncio.Event()

    async def long() -> None:
        started.set()
        await asyncio.sleep(3600)

    async with Shadow(name=name, url=redis_url) as shadow:
        shadow.register(long)
        await shadow.add(long, key="long")()
        async with Worker(shadow) as worker:
            running = asyncio.create_task(worker.run_until_finished())
            await asyncio.wait_for(started.wait(), 10)
            result = await asyncio.to_thread(
                shadows_cli, "cancel", "long", "--shadows", name, "--url", redis_url
            )
            assert result.returncode == 0, result.stderr
            assert "Cancelling long" in result.stdout
            await asyncio.wait_for(running, 10)

        async def cancelled() -> bool:
            found = await shadow.get_execution("long")
            return found is not None and found.state is ExecutionState.CANCELLED

        await wait_for(cancelled, message="cancelled")
    again = shadows_cli("cancel", "long", "--shadows", name, "--url", redis_url)
    assert_one_line_error(again, "Nothing to cancel")
