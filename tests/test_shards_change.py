"""Changing a shadow's shard count on a live system (issue 14), following the procedure of
docs/scaling.md ("Changing the number of shards"): real worker processes, a real Redis.

Under the old count, tasks wait due now (some still running on the old worker) and due
later; producers then restart with the new count, a worker with the new count starts and
the old one stops (a rolling restart). Every task must run exactly once, a re-add of an
old key under the new count must be a no-op wherever the new count routes that key, and
the old count can be forgotten once its shards are empty (not before).
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import time
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import BACKENDS, _cleanup, wait_for
from processes import spawn_worker
from shadows import Shadow
from shadows.cli import main
from shadows.core.keys import WORKER_GROUP, Keys, shard_of
from worker_tasks import limited, read_records, record_and_sleep

#: Tasks of each kind (now, later) added under each count.
TASKS = 12


def starts(runs: Path) -> Counter[str]:
    return Counter(record[1] for record in read_records(runs) if record[0] == "start")


def ended(runs: Path) -> set[str]:
    return {record[1] for record in read_records(runs) if record[0] == "end"}


def worker(url: str, name: str, shards: int, log: Path) -> subprocess.Popen[bytes]:
    return spawn_worker(
        url, name, "--concurrency", "4", log=log, env={"SHADOW_SHARDS": str(shards)}
    )


def command(*args: str) -> subprocess.CompletedProcess[str]:
    """``shadows ARGS`` run in this process (``main`` is made for it), as
    ``test_cli.shadows_cli`` would report it: a new interpreter costs seconds here."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
    return subprocess.CompletedProcess(["shadows", *args], code, out.getvalue(), err.getvalue())


def up(log: Path) -> bool:
    """Whether the worker logging to ``log`` has started (its signal handlers are set)."""
    return log.exists() and " started on shadow " in log.read_text()


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM: the worker finishes what it runs and exits 0."""
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 30) == 0, tail(log)


async def left(shadow: Shadow, shards: int) -> int:
    """Work still held by shards ``0..shards-1``: queued, ready or delivered, not acked."""
    total = 0
    for i in range(shards):
        keys = Keys(shadow.name, i)
        total += await shadow.client.zcard(keys.queue) + await shadow.client.xlen(keys.stream)
        if await shadow.client.exists(keys.stream):
            total += (await shadow.client.xpending(keys.stream, WORKER_GROUP))["pending"]
    return total


def moving(prefix: str, old: int, new: int) -> str:
    """A key that the new count routes to another shard than the old count did."""
    return next(
        key
        for key in (f"{prefix}-{i}" for i in range(1000))
        if shard_of(key, old) != shard_of(key, new)
    )


async def change(
    url: str,
    name: str,
    old: int,
    new: int,
    running: tuple[subprocess.Popen[bytes], Path],
    tmp_path: Path,
    spawned: list[subprocess.Popen[bytes]],
) -> tuple[subprocess.Popen[bytes], Path]:
    """Go from ``old`` to ``new`` shards while ``running`` (a worker started with ``old``,
    and its log) works; returns the worker started with ``new`` (also added to ``spawned``,
    for the clean-up), the old one stopped."""
    runs = tmp_path / "runs"
    label = f"{old}to{new}"
    held = moving(f"{label}-held", old, new)
    now = [f"{label}-now-{i}" for i in range(TASKS)]
    later = [f"{label}-later-{i}" for i in range(TASKS)]
    fresh = [f"{label}-new-{i}" for i in range(TASKS)]
    fresh_later = [f"{label}-newlater-{i}" for i in range(TASKS)]
    late = [f"{label}-late-{i}" for i in range(TASKS)]
    async with Shadow(name=name, url=url, shards=old) as before:
        for key in now:
            await before.add(record_and_sleep, key=key)(str(runs), key, 0.2)
        # the old worker is at work: the change starts while it runs these
        await wait_for(lambda: bool(starts(runs).keys() & set(now)), 30, "the old worker")
        soon = datetime.now(UTC) + timedelta(seconds=3)
        async with before.batch() as batch:
            for key in later:
                batch.add(record_and_sleep, when=soon, key=key)(str(runs), key, 0)
        assert batch.outcomes == ["scheduled"] * TASKS
        await before.add(record_and_sleep, when=soon + timedelta(hours=1), key=held)(
            str(runs), held, 0
        )
    # the keys that move: the test means nothing if the new count keeps them in place
    assert any(shard_of(key, old) != shard_of(key, new) for key in later)

    # step 1: producers restart with the new count
    async with Shadow(name=name, url=url, shards=new) as after:
        # an old key added again is a no-op, wherever the new count would put it
        async with after.batch() as batch:
            for key in later:
                batch.add(record_and_sleep, key=key)(str(runs), key, 0)
        assert batch.outcomes == ["exists"] * TASKS
        for key in later[:3]:
            await after.add(record_and_sleep, key=key)(str(runs), key, 0)
            assert await after.task_state(key) == "scheduled"
        for key in fresh:
            await after.add(record_and_sleep, key=key)(str(runs), key, 0)
        for key in fresh_later:
            await after.add(record_and_sleep, when=soon, key=key)(str(runs), key, 0)

        # step 2: workers restart with the new count, one at a time: the new one is up
        # before the old one is told to stop
        log = tmp_path / f"worker-{label}.log"
        started = worker(url, name, new, log)
        spawned.append(started)  # killed by the test if anything below fails
        await wait_for(lambda: up(log), 60, f"the new worker to start ({log})")
        # a producer not yet restarted adds more under the old count as the old worker
        # is told to stop
        async with Shadow(name=name, url=url, shards=old) as straggler:
            for key in late:
                await straggler.add(record_and_sleep, key=key)(str(runs), key, 0.2)
        stopping = asyncio.create_task(stop(*running))

        cli = ("--url", url, "--shadows", name)
        forget = ("shards", "forget", str(old), *cli)
        if old < new:
            # `shadows shards` lists both counts, and the old count cannot be forgotten
            # yet: a process ran with it moments ago
            listing = await asyncio.to_thread(command, "shards", "--json", *cli)
            assert listing.returncode == 0, listing.stderr
            assert set(json.loads(listing.stdout)["counts"]) == {str(old), str(new)}
            refused = await asyncio.to_thread(command, *forget)
            assert refused.returncode != 0 and "announced" in refused.stderr, refused.stderr

        everything = set(now + later + fresh + fresh_later + late)
        await wait_for(lambda: everything <= ended(runs), 30, f"every task to run ({log})")
        counts = starts(runs)
        assert {key: counts[key] for key in everything if counts[key] != 1} == {}
        await stopping

        # No process runs with the old count any more; the quiet period forget waits for
        # (3 heartbeats, at least 15 s) is not waited for here: the old count's last
        # announcement is set back by it instead.
        layout = after.keys.layout
        await after.client.hset(layout, str(old), int((time.time() - 60) * 1000))
        # The task due in an hour still waits where only the old count looks for its key
        # (growing: in shard 0, which both use; shrinking: in a shard only the old uses)
        refused = await asyncio.to_thread(command, *forget)
        where = held if old < new else f"shard {shard_of(held, old)} "
        assert refused.returncode != 0 and where in refused.stderr, refused.stderr

        # a cancel under the new count finds it where the old count put it
        assert await after.cancel(held)
        assert await after.task_state(held) == "cancelled"

        async def empty() -> bool:
            return await left(after, max(old, new)) == 0

        await wait_for(empty, 10, "the shards to empty")
        forgotten = await asyncio.to_thread(command, *forget)
        assert forgotten.returncode == 0, forgotten.stderr
        assert set(await after.client.hkeys(layout)) == {str(new).encode()}
        assert held not in starts(runs)
    return started, log


#: Worker processes need a server of their own (not memory://); SHADOW_TEST_BACKENDS=cluster
#: runs it on a 3-master cluster too, where the shards live on different masters.
ON_SERVERS = [backend for backend in BACKENDS if backend != "memory"]


@pytest.mark.parametrize("backend", ON_SERVERS)
async def test_growing_from_one_shard_to_three_and_back_loses_and_repeats_nothing(
    url: str, shadow_name: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    first = (worker(url, shadow_name, 1, log), log)
    workers = [first[0]]
    try:
        second = await change(url, shadow_name, 1, 3, first, tmp_path, workers)
        third = await change(url, shadow_name, 3, 1, second, tmp_path, workers)
        await stop(*third)
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        async with Shadow(name=shadow_name, url=url, shards=3) as shadow:
            await _cleanup(shadow)


async def test_forgetting_a_smaller_count_waits_for_its_tasks_in_the_shared_shards(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    """After growing from 1 to 3, shard 0 (used by both) may still hold a task added
    under 1 whose key 3 routes to shard 1 or 2: forgetting 1 then would let an add of
    that key under 3 miss it (a second copy). A task that lives home under any count (a
    concurrency limit) is no such task, once ``--tasks`` names it."""
    runs = str(tmp_path / "runs")
    plain, limited_key = moving("plain", 1, 3), moving("limited", 1, 3)
    later = datetime.now(UTC) + timedelta(hours=1)
    async with Shadow(name=shadow_name, url=redis_url, shards=1) as before:
        await before.add(record_and_sleep, when=later, key=plain)(runs, plain, 0)
        await before.add(limited, when=later, key=limited_key)(runs, "c", 0)
    async with Shadow(name=shadow_name, url=redis_url, shards=3) as after:
        try:
            await after.add(record_and_sleep, key="fresh")(runs, "fresh", 0)  # announces 3
            await after.client.hset(after.keys.layout, "1", int((time.time() - 60) * 1000))
            forget = ("shards", "forget", "1", "--url", redis_url, "--shadows", shadow_name)
            refused = await asyncio.to_thread(command, *forget)
            assert refused.returncode != 0
            assert "2 task(s)" in refused.stderr and plain in refused.stderr, refused.stderr
            await after.cancel(plain)
            # the limited task stays in shard 0 under any count, but only --tasks says so
            refused = await asyncio.to_thread(command, *forget)
            assert refused.returncode != 0 and limited_key in refused.stderr, refused.stderr
            tasks = ("--tasks", "worker_tasks:tasks")
            forgotten = await asyncio.to_thread(command, *forget, *tasks)
            assert forgotten.returncode == 0, forgotten.stderr
            # and under 3 alone, the limited task is still found and kept once
            assert await after.task_state(limited_key) == "scheduled"
            async with after.batch() as batch:
                batch.add(limited, key=limited_key)(runs, "c", 0)
            assert batch.outcomes == ["exists"]
        finally:
            await _cleanup(after)
